"""The ``cpu`` attention backend (sie's C++ kernel) beyond the shared backend tests of test_attention.py: the
shapes a reranker feeds it (sequences over several key blocks and query tiles, q, k and v as strided views of one
projection, empty sequences) against a float64 softmax(QK^T)V, and the engine in bf16 on it. Skipped where the
kernels cannot be built, failed there instead in CI (``SIE_REQUIRE_CPU_KERNELS=1``)."""

import numpy as np
import pytest
import torch

from sie import Reranker
from sie.kernels import available_backends, varlen_attention
from sie.testing import Shape, make_random_checkpoint, random_pairs
from sie.testing.references import reference_attention
from tests.kernels.checks import assert_matches

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def kernels_built(sie_cpu_ops):
    """Every test here needs the kernels (skipped where they cannot be built, a failure in CI)."""


def test_offered_for_bf16_and_its_head_dims_only():
    assert "cpu" in available_backends(CPU, torch.bfloat16, head_dim=32)["attention"]
    assert "cpu" in available_backends(CPU, torch.bfloat16, head_dim=128)["attention"]
    assert "cpu" not in available_backends(CPU, torch.bfloat16, head_dim=48)["attention"]
    assert "cpu" not in available_backends(CPU, torch.float32, head_dim=32)["attention"]


def _fused_projection(lengths, heads, kv_heads, head_dim, generator):
    """q, k, v as the engine slices them from one [tokens, heads + 2 * kv_heads, head_dim] projection (so rows are
    strided), except k, which is a separate contiguous tensor as after a rotary embedding."""
    total = sum(lengths)
    fused = torch.randn(total, heads + 2 * kv_heads, head_dim, generator=generator).to(torch.bfloat16)
    q, v = fused[:, :heads], fused[:, heads + kv_heads:]
    k = fused[:, heads:heads + kv_heads].contiguous()
    cu_seqlens = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    return q, k, v, cu_seqlens


@pytest.mark.parametrize(("head_dim", "heads", "kv_heads"), [(32, 12, 12), (64, 4, 2), (128, 4, 1)])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_long_sequences_from_strided_views(head_dim, heads, kv_heads, causal, seed):
    """Lengths around and beyond the kernel's 32-key blocks and 3-8-row query tiles, up to 300 tokens."""
    generator = torch.Generator().manual_seed(seed)
    lengths = [300, 1, 33, 64, 7, *torch.randint(1, 260, (3,), generator=generator).tolist()]
    q, k, v, cu_seqlens = _fused_projection(lengths, heads, kv_heads, head_dim, generator)
    out = varlen_attention(q, k, v, cu_seqlens, max(lengths), causal=causal, backend="cpu")
    assert_matches(out, reference_attention(q, k, v, cu_seqlens, cu_seqlens, causal, head_dim**-0.5), torch.bfloat16)


def test_empty_sequences_and_a_window_over_a_long_one(seed):
    generator = torch.Generator().manual_seed(seed)
    lengths = [0, 5, 0, 290, 2]
    q, k, v, cu_seqlens = _fused_projection(lengths, 2, 2, 64, generator)
    out = varlen_attention(q, k, v, cu_seqlens, max(lengths), window=(40, 8), backend="cpu")
    expected = reference_attention(q, k, v, cu_seqlens, cu_seqlens, False, 64**-0.5, (40, 8))
    assert_matches(out, expected, torch.bfloat16)


def test_as_close_to_float64_as_pytorchs_sdpa(seed):
    """On a reranking batch (12 heads of 32, 20 sequences of 30-260 tokens) the kernel's error is that of SDPA in
    bf16, whose output is rounded to bf16 the same way (measured: 0.9995-1.0002x of it over 8 seeds)."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(30, 261, (20,), generator=generator).tolist()
    q, k, v, cu_seqlens = _fused_projection(lengths, 12, 12, 32, generator)
    expected = reference_attention(q, k, v, cu_seqlens, cu_seqlens, False, 32**-0.5)
    errors = {backend: (varlen_attention(q, k, v, cu_seqlens, max(lengths), backend=backend).double() - expected)
              .abs().mean().item() for backend in ("cpu", "torch")}
    assert errors["cpu"] <= 1.1 * errors["torch"], errors


def test_the_bf16_engine_on_it_is_as_close_to_fp32_as_on_sdpa(tmp_path, seed):
    """A BERT reranker with 32-wide heads (the kernel's), in bf16 on the kernel and on SDPA: both are bf16 engines
    differing only in attention, so their mean distance to the fp32 logits is the same up to noise."""
    path = make_random_checkpoint(tmp_path / "bert", "bert", shape=Shape(num_layers=2, hidden=64, heads=2,
                                                                         intermediate=128), seed=seed % 1000)
    pairs = random_pairs(seed, (0, 3, 10, 25, 60, 120) * 6)
    logits = {}
    for name, dtype, backend in (("fp32", torch.float32, "torch"), ("cpu", torch.bfloat16, "cpu"),
                                 ("sdpa", torch.bfloat16, "torch")):
        reranker = Reranker(str(path), device="cpu", dtype=dtype, backend=backend, max_length=256)
        assert reranker.backends["attention"] == backend
        logits[name] = reranker.predict(pairs, activation_fn=torch.nn.Identity())
    errors = {name: np.abs(logits[name] - logits["fp32"]).mean() for name in ("cpu", "sdpa")}
    assert errors["cpu"] <= 1.5 * errors["sdpa"] + 1e-3 * np.abs(logits["fp32"]).mean(), errors


def test_a_zero_scale_is_uniform_attention_and_a_negative_or_infinite_one_is_refused(seed):
    """The kernel takes each row's maximum over unscaled scores, which holds for any scale that is not negative."""
    generator = torch.Generator().manual_seed(seed)
    q, k, v, cu_seqlens = _fused_projection([37, 63], 2, 2, 32, generator)
    out = varlen_attention(q, k, v, cu_seqlens, 63, softmax_scale=0.0, backend="cpu")
    assert_matches(out, reference_attention(q, k, v, cu_seqlens, cu_seqlens, False, 0.0), torch.bfloat16)
    for scale in (-0.5, float("inf")):
        with pytest.raises(RuntimeError, match="softmax_scale must be finite and not negative"):
            varlen_attention(q, k, v, cu_seqlens, 63, softmax_scale=scale, backend="cpu")


@pytest.mark.parametrize(("keys", "queries"), [([0, 4, 5], [0, 4, 5]), ([0, 4, 3], [0, 4, 3]), ([0, 4, 5], [0, 1, 2]),
                                               ([0, 1, 2], [0, 4, 5]), ([-1, 4, 4], [0, 1, 2])],
                         ids=["past-the-tokens", "decreasing", "keys-past", "queries-past", "negative"])
def test_bounds_outside_the_tensors_are_refused(keys, queries, seed):
    """The kernel reads and writes the rows cu_seqlens and cu_seqlens_q bound: bounds past q's or k's tokens read
    other memory and write past the output (a crash further on), so they are refused."""
    q, k, v, _ = _fused_projection([4], 2, 2, 32, torch.Generator().manual_seed(seed))
    cu_seqlens, cu_seqlens_q = (torch.tensor(bounds, dtype=torch.int32) for bounds in (keys, queries))
    with pytest.raises(RuntimeError, match="cu_seqlens must not decrease and must lie in"):
        varlen_attention(q, k, v, cu_seqlens, 5, cu_seqlens_q=cu_seqlens_q, max_seqlen_q=5, backend="cpu")


def test_no_key_value_heads_is_refused(sie_cpu_ops):
    """The op itself, as the engine calls it: no key/value heads is an error, not a division by zero."""
    q, k = torch.zeros(4, 2, 32, dtype=torch.bfloat16), torch.zeros(4, 0, 32, dtype=torch.bfloat16)
    cu_seqlens = torch.tensor([0, 4], dtype=torch.int32)
    with pytest.raises(RuntimeError, match="head shapes differ"):
        sie_cpu_ops.varlen_attention_bf16(q, k, k, cu_seqlens, cu_seqlens, False, 32**-0.5, -1, -1)


@pytest.mark.parametrize("window", [(-1, 2**31 - 1), (2**32, -1), (2**32 + 3, 2**40)])
def test_a_window_wider_than_any_sequence_bounds_nothing(window, seed):
    """Sides past the int range (2^32 wrapped to 0) or near its top (overflowing a sum with a position) are as wide
    as no bound at all, as in the other backends."""
    q, k, v, cu_seqlens = _fused_projection([1, 17, 40], 2, 2, 32, torch.Generator().manual_seed(seed))
    out = varlen_attention(q, k, v, cu_seqlens, 40, window=window, backend="cpu")
    assert_matches(out, reference_attention(q, k, v, cu_seqlens, cu_seqlens, False, 32**-0.5), torch.bfloat16)
