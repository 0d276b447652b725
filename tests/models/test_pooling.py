"""Pooling over packed sequences equals pooling each sequence alone, whatever the dtype."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sie.models import pooling
from sie.packing import pack
from sie.tokenization import EncodedPairs

PER_SEQUENCE = {
    "cls_pool": lambda rows: rows[0],
    "last_token_pool": lambda rows: rows[-1],
    "mean_pool": lambda rows: rows.mean(0),
    "mean_sqrt_len_pool": lambda rows: rows.sum(0) / len(rows) ** 0.5,
    "max_pool": lambda rows: rows.max(0).values,
}


@pytest.mark.parametrize("name", sorted(PER_SEQUENCE))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_pooling_equals_each_sequence_alone(name, dtype, rng):
    lengths = rng.integers(1, 40, size=7)
    ids = np.arange(int(lengths.sum()), dtype=np.int64)
    batch = pack(EncodedPairs(ids, np.zeros_like(ids), lengths), np.arange(len(lengths)), 0, torch.device("cpu"))
    states = torch.from_numpy(rng.standard_normal((int(lengths.sum()), 12)).astype(np.float32)).to(dtype)
    pooled = getattr(pooling, name)(states, batch)
    assert pooled.shape == (len(lengths), 12) and pooled.dtype == dtype
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    expected = torch.stack([PER_SEQUENCE[name](states[start:stop].double())
                            for start, stop in zip(bounds[:-1], bounds[1:], strict=True)])
    tolerance = 1e-6 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(pooled.double(), expected, rtol=tolerance, atol=tolerance)


def test_sum_pool_is_captured_in_a_cuda_graph(device, rng):
    """No host read of the bounds: a CUDA graph captures it (ModernBERT's mean pooling under GraphedForward)."""
    if device.type != "cuda":
        pytest.skip("capturing a CUDA graph needs SIE_TEST_DEVICE=cuda")
    lengths = np.array([3, 1, 5])
    ids = np.arange(int(lengths.sum()), dtype=np.int64)
    batch = pack(EncodedPairs(ids, np.zeros_like(ids), lengths), np.arange(len(lengths)), 0, device)
    states = torch.randn(int(lengths.sum()), 8, device=device)
    pooling.sum_pool(states, batch)  # warm-up outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        pooled = pooling.sum_pool(states, batch)
    graph.replay()
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    expected = torch.stack([states[start:stop].sum(0) for start, stop in zip(bounds[:-1], bounds[1:], strict=True)])
    torch.testing.assert_close(pooled, expected)


def test_sum_pool_refuses_rows_that_are_not_the_batch_tokens():
    """The segmented sum reads the rows the bounds name, unchecked: fewer rows (each sequence's first only) would be
    read past."""
    lengths = np.array([3, 4])
    ids = np.arange(int(lengths.sum()), dtype=np.int64)
    batch = pack(EncodedPairs(ids, np.zeros_like(ids), lengths), np.arange(len(lengths)), 0, torch.device("cpu"))
    with pytest.raises(ValueError, match="2 rows for a batch of 7 tokens"):
        pooling.sum_pool(torch.zeros(2, 4), batch)
