"""Micro-batch planning and packing: every pair exactly once, within budget, positions restarting."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sie.packing import pack, plan_micro_batches
from sie.tokenization import EncodedPairs


@pytest.mark.parametrize("max_batch_size", [None, 3])
def test_micro_batches_cover_every_pair_once_within_the_budget(max_batch_size, rng):
    lengths = rng.integers(1, 300, size=57)
    lengths[5] = 1000  # longer than the budget: runs alone
    batches = plan_micro_batches(lengths, max_batch_tokens=512, max_batch_size=max_batch_size)
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) == 1 or lengths[batch].sum() <= 512
        assert max_batch_size is None or len(batch) <= max_batch_size
    longest_first = [int(lengths[batch].max()) for batch in batches]
    assert longest_first == sorted(longest_first, reverse=True)


def test_pack_gathers_the_chosen_pairs_with_restarting_positions():
    encoded = EncodedPairs(
        input_ids=np.arange(100, 110, dtype=np.int64),
        token_type_ids=np.array([0, 0, 1, 0, 1, 1, 0, 0, 1, 1], dtype=np.int64),
        lengths=np.array([3, 3, 4], dtype=np.int64),
    )
    batch = pack(encoded, np.array([2, 0]), position_offset=2, device=torch.device("cpu"))
    assert batch.input_ids.tolist() == [106, 107, 108, 109, 100, 101, 102]
    assert batch.token_type_ids.tolist() == [0, 0, 1, 1, 0, 0, 1]
    assert batch.position_ids.tolist() == [2, 3, 4, 5, 2, 3, 4]
    assert batch.cu_seqlens.dtype == torch.int32 and batch.cu_seqlens.tolist() == [0, 4, 7]
    assert batch.max_seqlen == 4 and batch.cls_rows.tolist() == [0, 4]


def test_concat_keeps_pairs_in_order():
    first = EncodedPairs(np.array([1, 2, 3]), np.array([0, 0, 1]), np.array([3]))
    second = EncodedPairs(np.array([4, 5]), np.array([0, 1]), np.array([2]))
    joined = EncodedPairs.concat([first, second])
    assert joined.input_ids.tolist() == [1, 2, 3, 4, 5] and joined.lengths.tolist() == [3, 2]
    assert joined.starts.tolist() == [0, 3] and joined.num_pairs == 2 and joined.num_tokens == 5
