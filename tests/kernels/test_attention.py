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
