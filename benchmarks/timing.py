"""Timing shared by the benchmarks: wall-clock calls (CUDA work synchronised around each), operator profiles and
the matmul peak measured in the same run."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from sie.reranker import cpu_has_native_bf16


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ("AMD EPYC 7B13"), else what ``platform`` knows ("x86_64")."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    """The GPU's name for a CUDA device ("NVIDIA H200"), else the CPU's model name."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()


def encoder_flops(config, lengths: np.ndarray) -> float:
    """Useful FLOPs of a BERT encoder over sequences of ``lengths`` tokens (no padding counted).

    Per token and layer: 2 * (4 * hidden^2 + 2 * hidden * intermediate) for the projections and FFN;
    per sequence and layer: 4 * L^2 * hidden for QK^T and PV (the varlen sum of L_i^2).
    """
    hidden, inter, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    tokens = float(lengths.sum())
    return layers * (tokens * 2 * (4 * hidden * hidden + 2 * hidden * inter) + 4 * hidden * float((lengths**2).sum()))


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


def op_profile(run: Callable[[], object], device: torch.device) -> dict[str, float]:
    """Seconds of one call of ``run`` by torch operator (each operator's own time, excluding the operators it calls),
    largest first; CUDA kernels are counted on the GPU where the profiler sees them."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    synchronize(device)
    with torch.profiler.profile(activities=activities) as profiler:
        run()
        synchronize(device)
    attribute = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    seconds = {event.key: getattr(event, attribute) / 1e6 for event in profiler.key_averages()}
    return dict(sorted(((op, s) for op, s in seconds.items() if s > 0), key=lambda item: -item[1]))


def attention_share(by_op: dict[str, float]) -> float:
    """The attention operators' share (names holding 'attention' or 'attn') of a profile's total operator time."""
    return sum(s for op, s in by_op.items() if "attention" in op or "attn" in op) / sum(by_op.values())


def matmul_peak(dtype: torch.dtype, device: torch.device, size: int = 2048, repeats: int = 10) -> float | None:
    """Measured matmul GFLOP/s for square ``size`` matrices in ``dtype``; None for bf16 on a CPU that emulates it,
    where each product takes a minute and the figure bounds nothing sie runs there."""
    if device.type == "cpu" and dtype == torch.bfloat16 and not cpu_has_native_bf16():
        return None
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    return 2 * size**3 / median_seconds(lambda: a @ b, device, repeats) / 1e9


def peaks_text(peaks: dict[str, float | None]) -> str:
    """``fp32 174 GFLOP/s, bf16 emulated (not measured)`` for the peaks of :func:`matmul_peak`."""
    return ", ".join(f"{name} {value:.0f} GFLOP/s" if value is not None else f"{name} emulated (not measured)"
                     for name, value in peaks.items())
