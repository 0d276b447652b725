"""What a CPU user gets without asking: bf16 where the CPU has native bf16 (the default model in int8 where that
mode is faster), and oneDNN's caches bounded."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import sie.reranker
from sie import Reranker
from sie.onednn import CACHE_CAPACITY, CACHE_VARIABLES
from sie.reranker import cpu_has_native_bf16, default_dtype

CPUINFO = Path("/proc/cpuinfo")


@pytest.mark.skipif(not CPUINFO.is_file(), reason="no /proc/cpuinfo to read the CPU's flags from")
def test_native_bf16_agrees_with_the_kernels_cpu_flags():
    flags = {flag for line in CPUINFO.read_text().splitlines() if line.startswith("flags")
             for flag in line.partition(":")[2].split()}
    assert cpu_has_native_bf16() == bool(flags & {"avx512_bf16", "amx_bf16"})


@pytest.mark.parametrize(("native_bf16", "int8_faster", "published_int8", "expected"), [
    (True, False, False, torch.bfloat16),
    (True, False, True, torch.bfloat16),
    (True, True, False, torch.bfloat16),
    (True, True, True, torch.int8),
    (False, True, True, torch.float32),
    (False, False, False, torch.float32),
])
def test_the_cpu_default_is_bf16_with_native_bf16_int8_for_published_integers_where_faster(
        native_bf16, int8_faster, published_int8, expected, monkeypatch):
    monkeypatch.setattr(sie.reranker, "cpu_has_native_bf16", lambda: native_bf16)
    monkeypatch.setattr(sie.reranker, "int8_is_the_faster_cpu_mode", lambda: int8_faster)
    assert default_dtype(torch.device("cpu"), published_int8=published_int8) == expected
    assert default_dtype(torch.device("cuda"), published_int8=published_int8) == torch.float16


@pytest.mark.parametrize(("amx", "vnni", "kernels", "expected"), [
    (False, True, True, True),
    (True, True, True, False),
    (False, False, True, False),
    (False, True, False, False),
], ids=["vnni", "amx", "no-vnni", "no-kernels"])
def test_int8_is_the_faster_mode_with_vnni_and_sies_kernels_but_no_amx(amx, vnni, kernels, expected, monkeypatch):
    monkeypatch.setattr(sie.reranker, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(sie.reranker, "cpu_has_int8_dot_products", lambda: vnni)
    monkeypatch.setattr(sie.reranker, "cpu_extension", lambda: object() if kernels else None)
    assert sie.reranker.int8_is_the_faster_cpu_mode() is expected


@pytest.mark.parametrize("int8_faster", [True, False])
def test_the_default_model_without_a_dtype_runs_int8_where_faster(default_model_path, int8_faster, monkeypatch,
                                                                  caplog):
    monkeypatch.setattr(sie.reranker, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(sie.reranker, "int8_is_the_faster_cpu_mode", lambda: int8_faster)
    with caplog.at_level("INFO", logger="sie"):
        reranker = Reranker(default_model_path, device="cpu")
    assert reranker.dtype == (torch.int8 if int8_faster else torch.bfloat16)
    assert any("int8 mode by default" in record.getMessage() for record in caplog.records) is int8_faster
    assert Reranker(default_model_path, device="cpu", dtype="bfloat16").dtype == torch.bfloat16


def test_a_reranker_without_a_dtype_takes_the_default_and_float32_stays_one_argument_away(random_bert_path):
    assert Reranker(random_bert_path, device="cpu").dtype == default_dtype(torch.device("cpu"))
    assert Reranker(random_bert_path, device="cpu", dtype=torch.float32).dtype == torch.float32


@pytest.mark.parametrize(("dtype", "native_bf16", "int8_dot_products", "warning"), [
    (torch.bfloat16, False, True, "bfloat16 is emulated on this CPU"),
    (torch.int8, True, False, "no int8 dot products"),
    (torch.bfloat16, True, False, None),
    (torch.int8, False, True, None),
    (torch.float32, False, False, None),
], ids=["bf16-emulated", "int8-on-fp32-matmuls", "bf16-native", "int8-vnni", "fp32"])
def test_a_dtype_slower_than_fp32_on_this_cpu_is_warned_about_at_load(dtype, native_bf16, int8_dot_products, warning,
                                                                     random_bert_path, monkeypatch, caplog):
    monkeypatch.setattr(sie.reranker, "cpu_has_native_bf16", lambda: native_bf16)
    monkeypatch.setattr(sie.reranker, "cpu_has_int8_dot_products", lambda: int8_dot_products)
    with caplog.at_level("WARNING", logger="sie"):
        Reranker(random_bert_path, device="cpu", dtype=dtype)
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    slow = [message for message in warnings if "float32" in message]
    if warning is None:
        assert slow == []
    else:
        assert len(slow) == 1 and warning in slow[0], slow


def _run(code: str, **variables: str) -> str:
    environment = {name: value for name, value in os.environ.items() if name not in CACHE_VARIABLES}
    done = subprocess.run([sys.executable, "-c", code], env=environment | variables, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_import_sie_bounds_both_caches_unless_the_user_set_them():
    code = f"import os, sie; print(*(os.environ[name] for name in {CACHE_VARIABLES!r}))"
    assert _run(code) == f"{CACHE_CAPACITY} {CACHE_CAPACITY}"
    assert _run(code, LRU_CACHE_CAPACITY="8") == f"{CACHE_CAPACITY} 8"


GROWTH = """
import torch, torch.nn.functional as F
import sie
def rss_mb():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 1e6
weight = torch.randn(1536, 384, dtype=torch.bfloat16)
rows = torch.randn(4300, 384, dtype=torch.bfloat16)
F.linear(rows[:50], weight)
start = rss_mb()
for shape in range(600):
    F.linear(rows[: 100 + 7 * shape], weight)
print(rss_mb() - start)
"""


@pytest.mark.skipif(not Path("/proc/self/statm").is_file(), reason="RSS is read from /proc/self/statm (Linux)")
@pytest.mark.skipif(not cpu_has_native_bf16(), reason="oneDNN compiles no kernel per bf16 shape on a CPU without "
                    "native bf16 (an AVX2 EPYC grew 28 MB over the 600 shapes at either capacity): nothing to bound")
def test_bounded_caches_keep_memory_flat_over_new_shapes():
    """Every new token count is a new oneDNN kernel: 600 of them grow RSS by ~400 MB at torch's default capacity
    (1,024) and level off near 60 MB at sie's."""
    bounded = float(_run(GROWTH))
    default = float(_run(GROWTH, **{name: "1024" for name in CACHE_VARIABLES}))
    assert default > 150, f"torch's default caches grew only {default:.0f} MB: the test no longer tells them apart"
    assert bounded < 0.4 * default, f"bounded caches grew {bounded:.0f} MB, torch's default {default:.0f} MB"
