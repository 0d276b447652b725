"""varlen_attention on every backend against a float64 per-sequence softmax(QK^T)V."""

import pytest
import torch

from sie.kernels import ATTENTION_BACKENDS, varlen_attention
from tests.kernels.checks import DTYPES, assert_matches, skip_unless_available
from sie.testing.references import packed_qkv, reference_attention

# Lengths include 1, lengths that are not multiples of any block size, and lengths spanning several blocks;
# "fifty" draws 50 random lengths (one head, to keep the interpreter quick).
LENGTHS = {"mixed": [1, 37, 16, 5, 64, 17], "single": [45], "fifty": None}
NHEADS = {"mixed": 2, "single": 2, "fifty": 1}


def lengths_for(case: str, generator: torch.Generator) -> list[int]:
    if LENGTHS[case] is None:
        return torch.randint(1, 40, (50,), generator=generator).tolist()
    return LENGTHS[case]


@pytest.mark.parametrize("backend", ATTENTION_BACKENDS)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("headdim", [32, 64])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", list(LENGTHS))
def test_matches_float64(case, dtype, headdim, causal, backend, device):
    skip_unless_available("attention", backend, device, dtype)
    generator = torch.Generator().manual_seed(10 * headdim + causal + 1000 * len(case))
    lengths = lengths_for(case, generator)
    q, k, v, cu_seqlens = packed_qkv(lengths, NHEADS[case], headdim, dtype, device, generator)
    out = varlen_attention(q, k, v, cu_seqlens, max(lengths), causal=causal, backend=backend)
    assert_matches(out, reference_attention(q, k, v, cu_seqlens, cu_seqlens, causal, headdim**-0.5), dtype)


@pytest.mark.parametrize("backend", ATTENTION_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", ["mixed", "fifty"])
def test_cls_rows_attend_over_whole_sequences(case, dtype, backend, device):
    """Queries are the first row of each sequence (the last layer's CLS rows); keys and values are every token."""
    skip_unless_available("attention", backend, device, dtype)
    generator = torch.Generator().manual_seed(len(case))
    lengths = lengths_for(case, generator)
    q, k, v, cu_seqlens = packed_qkv(lengths, NHEADS[case], 32, dtype, device, generator)
    cls_q = q[cu_seqlens[:-1].long()]
    cu_seqlens_q = torch.arange(len(lengths) + 1, dtype=torch.int32, device=device)
    out = varlen_attention(
        cls_q, k, v, cu_seqlens, max(lengths), cu_seqlens_q=cu_seqlens_q, max_seqlen_q=1, backend=backend
    )
    assert_matches(out, reference_attention(cls_q, k, v, cu_seqlens, cu_seqlens_q, False, 32**-0.5), dtype)


@pytest.mark.parametrize("backend", ATTENTION_BACKENDS)
@pytest.mark.parametrize("headdim", [128, 24], ids=["headdim128", "headdim24-padded-block"])
def test_other_head_dims_and_scale(headdim, backend, device):
    dtype = torch.float16
    skip_unless_available("attention", backend, device, dtype)
    generator = torch.Generator().manual_seed(headdim)
    lengths = [3, 33, 1]
    q, k, v, cu_seqlens = packed_qkv(lengths, 2, headdim, dtype, device, generator)
    out = varlen_attention(q, k, v, cu_seqlens, max(lengths), softmax_scale=0.3, backend=backend)
    assert_matches(out, reference_attention(q, k, v, cu_seqlens, cu_seqlens, False, 0.3), dtype)


def test_each_sequence_attends_only_to_itself(device):
    """Changing one sequence's values leaves every other sequence's output bit-identical (torch backend)."""
    generator = torch.Generator().manual_seed(7)
    q, k, v, cu_seqlens = packed_qkv([5, 9, 4], 2, 32, torch.float32, device, generator)
    before = varlen_attention(q, k, v, cu_seqlens, 9, backend="torch")
    v = v.clone()
    v[5:14] += 1.0
    after = varlen_attention(q, k, v, cu_seqlens, 9, backend="torch")
    assert torch.equal(before[:5], after[:5]) and torch.equal(before[14:], after[14:])
    assert not torch.equal(before[5:14], after[5:14])


# Grouped-query attention: (query heads per key/value head, key/value heads). Ratio 1 and 2 run two key/value
# heads, so a wrong head -> group mapping reads the other group's keys; 7 and 8 (Qwen2-7B's and Qwen3's ratios)
# run one, to keep the interpreter quick.
GQA_RATIOS = {"ratio1": (1, 2), "ratio2": (2, 2), "ratio7": (7, 1), "ratio8": (8, 1)}


@pytest.mark.parametrize("backend", ATTENTION_BACKENDS)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize(("headdim", "dtype"), [(64, torch.float16), (128, torch.bfloat16)],
                         ids=["64-fp16", "128-bf16"])
@pytest.mark.parametrize("ratio", list(GQA_RATIOS))
def test_grouped_key_value_heads(ratio, headdim, dtype, causal, backend, device):
    """Query head h reads key/value head h // ratio; lengths 1 and one across two interpreted blocks."""
    skip_unless_available("attention", backend, device, dtype)
    group, nheads_kv = GQA_RATIOS[ratio]
    generator = torch.Generator().manual_seed(group * headdim + causal)
    lengths = [1, 45]
    q, k, v, cu_seqlens = packed_qkv(lengths, group * nheads_kv, headdim, dtype, device, generator, nheads_kv)
    out = varlen_attention(q, k, v, cu_seqlens, max(lengths), causal=causal, backend=backend)
    assert_matches(out, reference_attention(q, k, v, cu_seqlens, cu_seqlens, causal, headdim**-0.5), dtype)


# (left, right) windows against lengths 1, 9 and 70 (three interpreted blocks): narrower than a key block,
# asymmetric both ways, one side only (0 included), wider than some sequences and wider than all (which the kernel
# runs unbounded).
WINDOWS = {
    "4-4": (4, 4), "5-17": (5, 17), "17-5": (17, 5), "20-0": (20, 0), "0-6": (0, 6), "unbounded-3": (-1, 3),
    "12-unbounded": (12, -1), "40-40": (40, 40), "200-200": (200, 200),
}
WINDOW_LENGTHS = [1, 70, 9]


@pytest.mark.parametrize("backend", ATTENTION_BACKENDS)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("window", list(WINDOWS))
def test_sliding_window(window, causal, backend, device):
    """Query i at key position p sees keys p - left .. p + right (causal caps right at 0), two query heads on one
    key/value head. fp16 and bf16 alternate; fp32 stays out: on a GPU each window variant compiles three tuned
    configs, and fp32's (IEEE dots) take 10-45 s each."""
    index = list(WINDOWS).index(window)
    dtype = (torch.float16, torch.bfloat16)[index % 2]
    skip_unless_available("attention", backend, device, dtype)
    generator = torch.Generator().manual_seed(2 * index + causal)
    q, k, v, cu_seqlens = packed_qkv(WINDOW_LENGTHS, 2, 64, dtype, device, generator, nheads_kv=1)
    out = varlen_attention(q, k, v, cu_seqlens, max(WINDOW_LENGTHS), causal=causal, window=WINDOWS[window],
                           backend=backend)
    expected = reference_attention(q, k, v, cu_seqlens, cu_seqlens, causal, 64**-0.5, WINDOWS[window])
    assert_matches(out, expected, dtype)


@pytest.mark.parametrize("backend", ATTENTION_BACKENDS)
@pytest.mark.parametrize(("rows", "dtype"), [("last-causal", torch.bfloat16), ("last-window", torch.float16),
                                             ("first", torch.float32)], ids=["last-causal", "last-window", "first"])
def test_one_query_row_per_sequence_with_grouped_heads(rows, dtype, backend, device):
    """A decoder's last layer scores the last row of each sequence (causal: it sees the whole sequence; with a
    window, only the keys before it), an encoder's the first (CLS); seven query heads share a key/value head."""
    skip_unless_available("attention", backend, device, dtype)
    generator = torch.Generator().manual_seed(len(rows))
    lengths = [1, 45, 70, 33]
    q, k, v, cu_seqlens = packed_qkv(lengths, 7, 64, dtype, device, generator, nheads_kv=1)
    row_index = cu_seqlens[:-1] if rows == "first" else cu_seqlens[1:] - 1
    q_rows = q[row_index.long()]
    cu_seqlens_q = torch.arange(len(lengths) + 1, dtype=torch.int32, device=device)
    causal, window = rows == "last-causal", (20, 0) if rows == "last-window" else (-1, -1)
    out = varlen_attention(q_rows, k, v, cu_seqlens, max(lengths), cu_seqlens_q=cu_seqlens_q, max_seqlen_q=1,
                           causal=causal, window=window, backend=backend)
    expected = reference_attention(q_rows, k, v, cu_seqlens, cu_seqlens_q, causal, 64**-0.5, window)
    assert_matches(out, expected, dtype)


@pytest.mark.parametrize("max_seqlen_q", [1, 40], ids=["rows-config", "full-config"])
def test_triton_never_reads_key_blocks_outside_the_window(max_seqlen_q, device):
    """Long sequences with a narrow window cost O(L * window): key blocks that no query of a block sees are skipped,
    not loaded and masked. Keys and values before every query's window (and beyond any block size's rounding) are
    NaN; one load of them would turn the output NaN (0 * NaN in p @ v)."""
    dtype = torch.float16
    skip_unless_available("attention", "triton", device, dtype)
    generator = torch.Generator().manual_seed(max_seqlen_q)
    lengths, window = [300, 20], (16, 16)
    q, k, v, cu_seqlens = packed_qkv(lengths, 2, 64, dtype, device, generator, nheads_kv=1)
    # The last max_seqlen_q rows of each sequence (all of a shorter one), bottom-right aligned to its keys.
    take = [min(max_seqlen_q, n) for n in lengths]
    rows = torch.cat([torch.arange(end - n, end) for n, end in zip(take, cu_seqlens[1:].tolist(), strict=True)])
    q_rows = q[rows.to(device)]
    cu_seqlens_q = torch.tensor([0, *torch.tensor(take).cumsum(0).tolist()], dtype=torch.int32, device=device)
    expected = reference_attention(q_rows, k, v, cu_seqlens, cu_seqlens_q, False, 64**-0.5, window)
    # The first query sits at 300 - max_seqlen_q and sees keys from 16 before it: no key block of up to 128 keys
    # that holds one of them reaches below 128.
    assert 300 - max_seqlen_q - window[0] >= 128
    k, v = k.clone(), v.clone()
    k[:128], v[:128] = float("nan"), float("nan")
    out = varlen_attention(q_rows, k, v, cu_seqlens, max(lengths), cu_seqlens_q=cu_seqlens_q, max_seqlen_q=max_seqlen_q,
                           window=window, backend="triton")
    assert_matches(out, expected, dtype)


def test_cold_start_compiles_only_the_configs_a_launch_can_use():
    """fp32 and head dims of 128 or more skip the large tiles: each config costs seconds of compile at a cold start
    (the first H200 run stalled minutes in fp32 autotuning)."""
    from sie.kernels.triton_attention import _FULL_CONFIGS, _ROWS_CONFIGS, prune_configs

    def tiles(configs, dtype, head_dim):
        kept = prune_configs(configs, {"Q": torch.empty(1, dtype=dtype)}, HEAD_DIM=head_dim)
        return [(config.kwargs["BLOCK_M"], config.kwargs["BLOCK_N"]) for config in kept]

    assert tiles(_FULL_CONFIGS, torch.float16, 64) == [(128, 64), (128, 128), (64, 64)]
    assert tiles(_FULL_CONFIGS, torch.bfloat16, 128) == [(128, 64), (64, 64)]
    assert tiles(_FULL_CONFIGS, torch.float32, 32) == [(64, 64)]
    assert tiles(_ROWS_CONFIGS, torch.float32, 128) == [(16, 64), (16, 128)]


def test_triton_launches_from_two_threads_while_one_autotunes(monkeypatch, device):
    """A model's batcher launches the kernel while another thread times its configs for a new head dim: Triton's
    autotuner holds the launch's arguments on itself, so a launch that ends in between cleared the other's (a
    TypeError). Two configs, as on a GPU; the timing waits (up to a second) for the other thread's launch."""
    import threading

    import triton

    from sie.kernels import triton_attention

    dtype = torch.float32
    skip_unless_available("attention", "triton", device, dtype)
    timing, launched = threading.Event(), threading.Event()

    def slow_timing(kernel_call, quantiles=None, **kwargs):
        timing.set()
        launched.wait(timeout=1.0)
        return [1.0, 1.0, 1.0]

    configs = [triton.Config({"BLOCK_M": 32, "BLOCK_N": 32}), triton.Config({"BLOCK_M": 16, "BLOCK_N": 32})]
    monkeypatch.setattr(triton_attention, "_attention_full", triton.autotune(
        configs=configs, key=triton_attention._KEY, do_bench=slow_timing)(triton_attention._attention_kernel))
    generator = torch.Generator().manual_seed(0)
    cases = {head_dim: packed_qkv([20], 1, head_dim, dtype, device, generator) for head_dim in (16, 32)}

    def attend(head_dim):
        q, k, v, cu_seqlens = cases[head_dim]
        return varlen_attention(q, k, v, cu_seqlens, 20, backend="triton")

    attend(16)  # tuned before the other thread starts
    results = {}
    tuning = threading.Thread(target=lambda: results.update(tuned=attend(32)))
    tuning.start()
    assert timing.wait(timeout=30)
    results["tuned_before"] = attend(16)
    launched.set()
    tuning.join(timeout=60)
    for head_dim, out in ((32, results.get("tuned")), (16, results["tuned_before"])):
        q, k, v, cu_seqlens = cases[head_dim]
        assert out is not None, "the autotuning thread failed"
        assert_matches(out, reference_attention(q, k, v, cu_seqlens, cu_seqlens, False, head_dim**-0.5), dtype)
