"""Packing tokenized pairs into variable-length batches: token-budget micro-batches and ``cu_seqlens``.

Nothing here pads: a batch is ``(total_tokens,)`` ids with int32 ``cu_seqlens`` marking where each
sequence starts, the layout flash-attention's varlen functions and our kernels read.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sie.tokenization import EncodedPairs


@dataclass(frozen=True)
class PackedBatch:
    """One micro-batch on the model's device.

    input_ids, token_type_ids, position_ids: int64 ``(total_tokens,)``; cu_seqlens: int32 ``(batch + 1,)``;
    max_seqlen: the longest sequence.
    """

    input_ids: torch.Tensor
    token_type_ids: torch.Tensor
    position_ids: torch.Tensor
    cu_seqlens: torch.Tensor
    max_seqlen: int

    @property
    def batch_size(self) -> int:
        return self.cu_seqlens.shape[0] - 1

    @property
    def cls_rows(self) -> torch.Tensor:
        """Row of each sequence's first token, int64 ``(batch,)``."""
        return self.cu_seqlens[:-1].long()

    @property
    def last_rows(self) -> torch.Tensor:
        """Row of each sequence's last token, int64 ``(batch,)``."""
        return self.cu_seqlens[1:].long() - 1

    @property
    def one_row_each(self) -> torch.Tensor:
        """``cu_seqlens`` of queries that are one row per sequence (CLS or last rows), int32 ``(batch + 1,)``."""
        return torch.arange(self.batch_size + 1, dtype=torch.int32, device=self.cu_seqlens.device)


def plan_micro_batches(lengths: np.ndarray, max_batch_tokens: int, max_batch_size: int | None = None) -> list[np.ndarray]:
    """Groups pair indices into micro-batches of at most ``max_batch_tokens`` tokens (and ``max_batch_size`` pairs).

    Pairs are taken longest first, so similar lengths share a batch; a pair longer than the budget
    runs alone. Returns index arrays into ``lengths`` whose union is every index exactly once.
    """
    order = np.argsort(-lengths, kind="stable")
    batches: list[np.ndarray] = []
    start, tokens = 0, 0
    for position, index in enumerate(order):
        length = int(lengths[index])
        full = max_batch_size is not None and position - start >= max_batch_size
        if position > start and (tokens + length > max_batch_tokens or full):
            batches.append(order[start:position])
            start, tokens = position, 0
        tokens += length
    if start < len(order):
        batches.append(order[start:])
    return batches


def pack(
    encoded: EncodedPairs, indices: np.ndarray, position_offset: int, device: torch.device,
    dummies: np.ndarray | None = None, max_seqlen: int | None = None,
) -> PackedBatch:
    """Gathers the pairs ``indices`` of ``encoded`` into one PackedBatch on ``device``.

    Positions restart at ``position_offset`` in every sequence (0 for BERT; padding_idx + 1 for RoBERTa).
    ``dummies`` appends sequences of those lengths made of token 0 after the real ones, and ``max_seqlen``
    overrides the longest length (both set by a CUDA graph bucket, ``sie.cuda_graphs``).
    """
    real = encoded.lengths[indices]
    lengths = real if dummies is None else np.concatenate([real, dummies])
    cu_seqlens = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=cu_seqlens[1:])
    total, real_total = int(cu_seqlens[-1]), int(cu_seqlens[len(real)])
    within = np.arange(total, dtype=np.int64) - np.repeat(cu_seqlens[:-1], lengths)
    rows = np.repeat(encoded.starts[indices], real) + within[:real_total]
    padding = np.zeros(total - real_total, dtype=np.int64)
    # One host-to-device copy: ids, token types, positions and cu_seqlens travel in one buffer, pinned for a GPU
    # so that the copy is asynchronous and the host goes on packing the next batch.
    host = torch.from_numpy(np.concatenate([encoded.input_ids[rows], padding, encoded.token_type_ids[rows], padding,
                                            within + position_offset, cu_seqlens]))
    on_device = host.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else host
    return PackedBatch(
        input_ids=on_device[:total],
        token_type_ids=on_device[total : 2 * total],
        position_ids=on_device[2 * total : 3 * total],
        cu_seqlens=on_device[3 * total :].to(torch.int32),
        max_seqlen=max_seqlen or (int(lengths.max()) if len(lengths) else 0),
    )
