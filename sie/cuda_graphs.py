"""CUDA graphs over shape buckets: a packed batch is padded to the next bucket, and each bucket's forward is
captured once and replayed, so a small model's batch costs a few launches instead of hundreds.

A graph replays fixed shapes and fixed Python numbers, so a bucket fixes three of them: total tokens, sequences
(``cu_seqlens`` has one more entry) and ``max_seqlen``, which sizes the attention kernels' grids. Each is the next
step of a geometric ladder. The padding is made of dummy sequences (padding tokens, positions restarting at the
model's offset like any sequence) after the real ones, at most ``max_seqlen`` long each: attention never crosses
a sequence boundary and every other op works row by row, so a dummy sequence changes no real score, and its own
scores are dropped. Capture needs a CUDA device; the bucketing and padding are plain numpy, used on any device.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from sie.packing import PackedBatch

logger = logging.getLogger(__name__)

# Ladders: tokens from 1,024 to 65,536 in steps of sqrt(2) (at most ~41% padding), sequences and the longest
# sequence in powers of two. Beyond the top of a ladder a batch runs eagerly.
TOKEN_BUCKETS = tuple(int(1024 * 2 ** (step / 2)) // 64 * 64 for step in range(13))
SEQUENCE_BUCKETS = tuple(2**power for power in range(3, 13))
SEQLEN_BUCKETS = tuple(2**power for power in range(5, 16))


@dataclass(frozen=True)
class Bucket:
    """A padded batch's shape: ``tokens`` in all, ``sequences`` (real and dummy), none longer than ``max_seqlen``."""

    tokens: int
    sequences: int
    max_seqlen: int


def _step(ladder: tuple[int, ...], value: int) -> int | None:
    return next((step for step in ladder if step >= value), None)


def bucket_for(lengths: np.ndarray, max_length: int) -> Bucket | None:
    """The bucket of a micro-batch of sequences of ``lengths`` tokens, or None when it is off the ladders.

    There is always at least one dummy sequence, and every dummy holds at least one token (an empty sequence
    would have no first or last row to read) and at most ``max_seqlen``. ``max_length``, the model's longest
    sequence, caps ``max_seqlen`` so that a dummy's positions stay inside the position table.
    """
    if lengths.size == 0:
        return None
    real = int(lengths.sum())
    max_seqlen = _step(SEQLEN_BUCKETS, int(lengths.max()))
    if max_seqlen is None:
        return None
    max_seqlen = min(max_seqlen, max_length)
    sequences = _step(SEQUENCE_BUCKETS, lengths.size + 1)
    while sequences is not None:
        dummies = sequences - lengths.size
        tokens = _step(TOKEN_BUCKETS, real + dummies)
        if tokens is None:
            return None
        if tokens - real <= dummies * max_seqlen:
            return Bucket(tokens, sequences, max_seqlen)
        sequences = _step(SEQUENCE_BUCKETS, sequences + 1)
    return None


def dummy_lengths(lengths: np.ndarray, bucket: Bucket) -> np.ndarray:
    """Lengths of the dummy sequences that fill ``bucket`` after real sequences of ``lengths``: the padding tokens
    shared as evenly as can be, so each dummy holds from one token to ``max_seqlen``."""
    dummies = bucket.sequences - lengths.size
    share, extra = divmod(bucket.tokens - int(lengths.sum()), dummies)
    return np.array([share + 1] * extra + [share] * (dummies - extra), dtype=np.int64)


class GraphedForward:
    """Runs ``forward`` (a packed batch -> ``(batch,)`` relevance logits) through one CUDA graph per bucket.

    Each bucket's graph is captured at its first batch, after two eager warm-up runs (Triton compiles and autotunes
    outside the capture), into a memory pool shared by every graph: they replay one at a time. A bucket whose
    capture fails is logged and runs eagerly from then on.
    """

    def __init__(self, forward: Callable[[PackedBatch], torch.Tensor], device: torch.device) -> None:
        self._forward = forward
        self._device = device
        self._graphs: dict[Bucket, tuple[torch.cuda.CUDAGraph, PackedBatch, torch.Tensor] | None] = {}
        self._pool = torch.cuda.graph_pool_handle()

    @property
    def captured(self) -> dict[Bucket, bool]:
        """Each bucket met so far and whether its graph was captured (False: it runs eagerly)."""
        return {bucket: graph is not None for bucket, graph in self._graphs.items()}

    def __call__(self, batch: PackedBatch, bucket: Bucket) -> torch.Tensor:
        """Relevance logits ``(bucket.sequences,)`` of ``batch``, which is padded to ``bucket``."""
        if bucket not in self._graphs:
            self._graphs[bucket] = self._capture(batch, bucket)
        captured = self._graphs[bucket]
        if captured is None:
            return self._forward(batch)
        graph, static, output = captured
        for name in ("input_ids", "token_type_ids", "position_ids", "cu_seqlens"):
            getattr(static, name).copy_(getattr(batch, name), non_blocking=True)
        graph.replay()
        return output.clone()

    def _capture(self, batch: PackedBatch, bucket: Bucket):
        static = PackedBatch(input_ids=batch.input_ids.clone(), token_type_ids=batch.token_type_ids.clone(),
                             position_ids=batch.position_ids.clone(), cu_seqlens=batch.cu_seqlens.clone(),
                             max_seqlen=bucket.max_seqlen)
        try:
            # The model's device is made current: a capture records on the current device's streams.
            with torch.cuda.device(self._device):
                stream = torch.cuda.Stream()
                stream.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(stream):
                    for _ in range(2):
                        self._forward(static)
                torch.cuda.current_stream().wait_stream(stream)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool=self._pool):
                    output = self._forward(static)
        except RuntimeError as error:  # a kernel or op that cannot be captured: this bucket stays eager
            logger.warning("CUDA graph capture failed for %s (%s); running it eagerly", bucket, error)
            return None
        logger.info("captured a CUDA graph for %s", bucket)
        return graph, static, output
