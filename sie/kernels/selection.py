"""Which attention backend ``auto`` picks: the fastest there, measured once per device, dtype and head size on a
packed batch of reranking length, not assumed (on an H200, sie's Triton kernel ran 1.6-1.8x faster than PyTorch's
flash kernel, which a fixed order had put first; on a CPU, sie's C++ kernel runs against PyTorch's SDPA, whose CPU
kernel may use AMX where the C++ one does not).

The measurement runs when a model resolves its backends; its first Triton call compiles and autotunes the same
kernel the model then uses, so the warm-up is not lost.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable

import torch

logger = logging.getLogger(__name__)

# A packed batch like a reranking request's: 64 sequences of 96-288 tokens, 16 query heads on 8 key/value heads.
_LENGTHS = tuple(96 + (37 * i) % 193 for i in range(64))
_HEADS, _KV_HEADS = 16, 8
# A CPU is timed on the first sequences only: the whole batch takes ~0.1 s per call there.
_CPU_SEQUENCES = 12


def fastest_first(candidates: tuple[str, ...], seconds_of: Callable[[str], float]) -> tuple[str, ...]:
    """``candidates`` ordered by ``seconds_of(backend)``, fastest first; a candidate that fails to run is dropped
    (logged), and kept last if all fail."""
    timings = {}
    for backend in candidates:
        try:
            timings[backend] = seconds_of(backend)
        except Exception as error:  # a kernel that cannot run here must not stop the model from loading
            logger.warning("attention backend %s failed its timing run (%s); not choosing it", backend, error)
    if not timings:
        return candidates
    order = tuple(sorted(timings, key=timings.get))
    logger.info("attention backends by measured time: %s",
                ", ".join(f"{backend} {1000 * timings[backend]:.3f} ms" for backend in order))
    return order + tuple(backend for backend in candidates if backend not in timings)


def attention_seconds(run: Callable[..., torch.Tensor], device: torch.device, dtype: torch.dtype,
                      head_dim: int, repeats: int = 5) -> float:
    """Seconds of one call of the attention implementation ``run`` on the packed benchmark batch: the median of
    ``repeats`` CUDA-event timings on a GPU; on a CPU the fastest of ``2 * repeats + 1`` wall-clock timings, which a
    neighbour's burst of work (a shared or virtual machine) cannot make slower than it is."""
    lengths = _LENGTHS if device.type == "cuda" else _LENGTHS[:_CPU_SEQUENCES]
    generator = torch.Generator(device="cpu").manual_seed(0)
    total = sum(lengths)
    q = torch.randn(total, _HEADS, head_dim, generator=generator).to(device, dtype)
    k, v = (torch.randn(total, _KV_HEADS, head_dim, generator=generator).to(device, dtype) for _ in range(2))
    cu_seqlens = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=device)
    longest = max(lengths)

    def call() -> torch.Tensor:
        return run(q, k, v, cu_seqlens, longest, cu_seqlens, longest, causal=False, softmax_scale=head_dim**-0.5)

    call()  # compiles and autotunes a Triton kernel; warms the others
    if device.type != "cuda":
        wall = []
        for _ in range(2 * repeats + 1):
            start = time.perf_counter()
            call()
            wall.append(time.perf_counter() - start)
        return min(wall)
    # The kernels launch on the stream of the tensors' GPU; the current device may be another (cuda:0 in a worker
    # serving cuda:1), whose stream would time nothing.
    stream = torch.cuda.current_stream(device)
    seconds = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record(stream)
        call()
        end.record(stream)
        end.synchronize()
        seconds.append(start.elapsed_time(end) / 1000)
    return statistics.median(seconds)
