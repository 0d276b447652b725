"""Wall-clock timing shared by the benchmarks: CUDA work is synchronised around every timed call."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_of(run: Callable[[], object], device: torch.device) -> float:
    """Seconds one call of ``run`` takes, its queued GPU work included."""
    synchronize(device)
    start = time.perf_counter()
    run()
    synchronize(device)
    return time.perf_counter() - start


def median_seconds(run: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median of ``repeats`` timed calls after one untimed warm-up (Triton compiles and autotunes on first use)."""
    run()
    return statistics.median(seconds_of(run, device) for _ in range(repeats))
