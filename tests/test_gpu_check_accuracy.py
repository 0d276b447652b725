"""benchmarks/gpu_check.py on the CPU: its accuracy stage poisons every output, as the kernel tests do (a kernel that
leaves its output unwritten fails there, where it used to pass on the right answer another computation had left in
the same memory), and its decoder baseline times the same work as sie."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def test_an_output_left_unwritten_fails_the_accuracy_stage(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    gpu_check = importlib.import_module("gpu_check")

    def unwritten_bias_gelu(x, bias, *, backend):
        del backend
        right = F.gelu(x.float() + bias.float()).to(x.dtype)
        del right  # its memory, holding the right answer, is free for the next tensor of its size
        return torch.empty_like(x)

    monkeypatch.setattr(gpu_check, "bias_gelu", unwritten_bias_gelu)
    for stage in ("stage_parity", "stage_graphs", "stage_e2e", "stage_decoders"):
        monkeypatch.setattr(gpu_check, stage, lambda *args: iter(()))
    for stage in ("stage_env", "make_checkpoints", "stage_kernels", "stage_server"):
        monkeypatch.setattr(gpu_check, stage, lambda *args: {})
    assert gpu_check.main(["--device", "cpu", "--tiny", "--results", str(tmp_path), "--seed", "0"]) == 1
    rows = json.loads((tmp_path / "gpu_check.json").read_text())["accuracy"]
    gelu = [row for row in rows if row["op"] == "bias_gelu"]
    assert gelu and all(row["error"] == float("inf") and not row["ok"] for row in gelu)
    assert all(row["ok"] for row in rows if row["op"] != "bias_gelu")
    assert not torch.are_deterministic_algorithms_enabled()  # restored for the stages after it


def test_the_decoder_baseline_tokenizes_in_the_timed_call(monkeypatch, tmp_path):
    """The decoder e2e lines time sie's predict, tokenization included, against transformers' call: that call must
    tokenize too (it used to tokenize once, before the timing)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    gpu_check = importlib.import_module("gpu_check")
    from sie.testing import make_random_checkpoint

    path = make_random_checkpoint(tmp_path / "qwen3", "qwen3", shape="tiny-gqa", max_position_embeddings=512, seed=0)
    calls = []
    tokenize = gpu_check.qwen3_reranker_ids
    monkeypatch.setattr(gpu_check, "qwen3_reranker_ids", lambda *args: calls.append(1) or tokenize(*args))
    run = gpu_check.decoder_reference(path, "qwen3-reranker", [("a query", "a document")], torch.float32,
                                      torch.device("cpu"), 512, [0, 1], batch_size=4)
    before = len(calls)
    run()
    assert len(calls) == before + 1


def test_a_negative_seed_is_refused_before_any_stage(monkeypatch, tmp_path, capsys):
    """numpy's generators refuse a negative seed: the parity, graphs, e2e and decoders stages failed on it."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    gpu_check = importlib.import_module("gpu_check")
    for stage in ("stage_accuracy", "stage_parity", "stage_graphs", "stage_e2e", "stage_decoders"):
        monkeypatch.setattr(gpu_check, stage, lambda *args: iter(()))
    for stage in ("stage_env", "make_checkpoints", "stage_kernels", "stage_server"):
        monkeypatch.setattr(gpu_check, stage, lambda *args: {})
    with pytest.raises(SystemExit) as exit_info:
        gpu_check.main(["--device", "cpu", "--results", str(tmp_path), "--seed", "-1"])
    assert exit_info.value.code == 2
    assert "--seed must be 0 or more, got -1" in capsys.readouterr().err
