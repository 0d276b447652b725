"""What the Triton kernels share: interpreter detection and the launch configurations to tune over."""

import contextlib
import threading

import torch
import triton
import triton.language as tl

from .environment import triton_interpreted

# Triton reads the flag when @triton.jit functions are defined, so reading it once at import agrees with it.
INTERPRETED = triton_interpreted()

KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)

# Triton's Autotuner keeps a launch's arguments on itself (``nargs``) from pruning through the timing runs to the
# launch, and clears them after: two threads launching one autotuned kernel at once (two models' batchers, or a
# model loading beside one serving) read each other's arguments, or None. Every autotuned launch holds this lock.
AUTOTUNED_LAUNCH = threading.Lock()


def autotune(configs: list[triton.Config], interpreted: triton.Config, key: list[str], prune=None):
    """triton.autotune over ``configs`` on a GPU; under the interpreter the single ``interpreted`` config.

    One config skips the timing runs, so interpreted tests take the same launch path as the GPU without its cost.
    ``prune(configs, named_args, **kwargs)`` drops, before anything compiles, the configs a launch's arguments rule
    out. The chosen configs are cached on disk beside Triton's compiled kernels, so a restarted process neither
    compiles nor times them again.
    """
    if INTERPRETED:
        return triton.autotune(configs=[interpreted], key=key)
    return triton.autotune(configs=configs, key=key, cache_results=True,
                           prune_configs_by={"early_config_prune": prune} if prune else None)


def rows_per_program(block_h: int) -> int:
    """BLOCK_R of a row-wise kernel whose program holds whole rows of ``block_h`` columns (a power of two).

    Up to 8,192 elements a program, enough rows to keep loads wide when rows are short, and at most 16 rows on a
    GPU. The interpreter takes up to 64: each program costs it ~20 ms of Python, and at 16 Qwen3's q/k norms (rows
    of one head) took half of an interpreted tiny decoder's kernel time.
    """
    return max(1, min(64 if INTERPRETED else 16, 8192 // block_h))


def upcast_bf16(dtype: torch.dtype) -> bool:
    """Whether a kernel must compute bf16 inputs in fp32: the interpreter's bf16 arithmetic is wrong."""
    return INTERPRETED and dtype == torch.bfloat16


def round_bf16_in_software(dtype: torch.dtype) -> bool:
    """Whether a kernel must round fp32 to bf16 itself (:func:`to_rounded`): the interpreter's conversion truncates,
    a GPU's rounds to nearest even. Matters where a kernel rounds several times, as the references do."""
    return INTERPRETED and dtype == torch.bfloat16


@triton.jit
def to_rounded(x, DTYPE: tl.constexpr, ROUND_BF16: tl.constexpr):
    """fp32 ``x`` rounded to DTYPE to nearest, ties to even. With ROUND_BF16 (interpreted bf16 only) the rounding
    is done on the bits, so the interpreter's truncating conversion that follows is exact (finite x only)."""
    if ROUND_BF16:
        bits = x.to(tl.uint32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16 << 16
        x = bits.to(tl.float32, bitcast=True)
    return x.to(DTYPE)


def check_tensors(op: str, dtype: torch.dtype, device: torch.device, **tensors: torch.Tensor) -> None:
    """Raise ValueError unless every tensor has ``dtype`` and sits on ``device``."""
    for name, tensor in tensors.items():
        if tensor.dtype != dtype or tensor.device != device:
            raise ValueError(f"{op}: {name} is {tensor.dtype} on {tensor.device}, expected {dtype} on {device}")


def check_kernel_dtype(op: str, dtype: torch.dtype) -> None:
    """Raise ValueError unless the kernels compute in ``dtype``."""
    if dtype not in KERNEL_DTYPES:
        raise ValueError(f"{op}: Triton kernels take fp16, bf16 or fp32, got {dtype}")


def on_device(tensor: torch.Tensor) -> contextlib.AbstractContextManager:
    """Make ``tensor``'s GPU the current device for a launch.

    Triton launches on the calling thread's current device, which is cuda:0 in every new thread: without this,
    a model on cuda:1 driven from the server's batcher thread would run its kernels on the wrong GPU.
    """
    return torch.cuda.device(tensor.device) if tensor.device.type == "cuda" else contextlib.nullcontext()
