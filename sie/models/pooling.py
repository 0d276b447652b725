"""Pooling packed hidden states into one vector per sequence, by the sequence bounds of a ``PackedBatch``.

Every function takes ``states`` of ``(total_tokens, hidden)`` and returns ``(batch, hidden)`` in ``states``' dtype;
sums and maxima run in fp32 over each sequence's own rows, so nothing is padded and no mask is needed.
"""

from __future__ import annotations

import math

import torch

from sie.packing import PackedBatch


def sequence_ids(batch: PackedBatch, total_tokens: int) -> torch.Tensor:
    """The sequence each packed row belongs to, int64 ``(total_tokens,)``."""
    lengths = (batch.cu_seqlens[1:] - batch.cu_seqlens[:-1]).long()
    sequences = torch.arange(batch.batch_size, device=lengths.device)
    return torch.repeat_interleave(sequences, lengths, output_size=total_tokens)


def sequence_lengths(batch: PackedBatch) -> torch.Tensor:
    """Tokens per sequence, fp32 ``(batch, 1)``."""
    return (batch.cu_seqlens[1:] - batch.cu_seqlens[:-1]).float()[:, None]


def sum_pool(states: torch.Tensor, batch: PackedBatch) -> torch.Tensor:
    """The fp32 sum of each sequence's rows, ``(batch, hidden)`` fp32: a segmented sum over the packed rows, in
    time and memory linear in the tokens (a ``(batch, total_tokens)`` membership matmul took 0.8 s and 70 MB on
    CPU for 2,730 three-token texts, and would take GiBs at a GPU's token budget; an index_add is slower).

    By ``offsets``, not ``lengths``: with lengths torch checks their sum with ``.item()``, a host sync that fails a
    CUDA graph's capture (ModernBERT's mean pooling) and stalls the host otherwise. Nor are offsets checked against
    the rows, which they would read past: the rows are checked here, on the host, against the batch's tokens."""
    if states.shape[0] != batch.input_ids.shape[0]:
        raise ValueError(f"sum_pool: {states.shape[0]} rows for a batch of {batch.input_ids.shape[0]} tokens")
    return torch.segment_reduce(states.float(), "sum", offsets=batch.cu_seqlens, axis=0)


def mean_pool(states: torch.Tensor, batch: PackedBatch) -> torch.Tensor:
    """The mean of each sequence's rows."""
    return (sum_pool(states, batch) / sequence_lengths(batch)).to(states.dtype)


def mean_sqrt_len_pool(states: torch.Tensor, batch: PackedBatch) -> torch.Tensor:
    """The sum of each sequence's rows over the square root of its length (sentence-transformers'
    ``mean_sqrt_len_tokens``)."""
    return (sum_pool(states, batch) / sequence_lengths(batch).sqrt()).to(states.dtype)


def max_pool(states: torch.Tensor, batch: PackedBatch) -> torch.Tensor:
    """The elementwise maximum over each sequence's rows."""
    index = sequence_ids(batch, states.shape[0])[:, None].expand(-1, states.shape[1])
    maxima = torch.full((batch.batch_size, states.shape[1]), -math.inf, dtype=torch.float32, device=states.device)
    return maxima.scatter_reduce_(0, index, states.float(), reduce="amax").to(states.dtype)


def cls_pool(states: torch.Tensor, batch: PackedBatch) -> torch.Tensor:
    """Each sequence's first row."""
    return states[batch.cls_rows]


def last_token_pool(states: torch.Tensor, batch: PackedBatch) -> torch.Tensor:
    """Each sequence's last row."""
    return states[batch.last_rows]
