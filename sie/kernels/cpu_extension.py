"""sie's C++ CPU kernels (``csrc/``): attention in bf16 (``cpu_attention.cpp``) and the int8 mode's quantize and
rescale passes (``cpu_int8.cpp``), registered as ``torch.ops.sie_cpu``.

They are written for x86 CPUs with AVX512-BF16 and built on first use by torch's extension builder (ninja and the
system's C++ compiler), once per machine and torch version, into torch's extension cache
(``$TORCH_EXTENSIONS_DIR``, by default ``~/.cache/torch_extensions``): 7-20 s on 2 cores, then well under a
second to load. Where they cannot be built (another CPU, no compiler), :func:`cpu_extension` returns None, the
reason is logged once, and PyTorch's own ops run instead. Processes that start together build once: each holds
sie's own lock on the build folder (the kernel's ``flock``, which goes with a process that dies) while it builds or
loads, so torch's lock file found there belongs to a build that was killed, and is removed (torch's builder would
wait on it forever).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import os
import platform
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

SOURCES = [Path(__file__).parent / "csrc" / name for name in ("cpu_attention.cpp", "cpu_int8.cpp")]
# The instruction sets the kernels are written in, not -march=native: the cached library does not depend on
# which CPU built it, only on the one that loads it having these. No contraction into fused multiply-adds: the
# int8 rescale equals the eager ops bit for bit. OpenMP, because at::parallel_for is inlined into the kernels and
# runs its loop on torch's threads through `#pragma omp parallel`: without the flag the pragma is ignored and every
# kernel runs on one core (the loader then shares torch's own libgomp, already loaded under the same name).
_FLAGS = ["-O3", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx512bf16", "-mfma",
          "-ffp-contract=off", "-fopenmp"]
# The library links against this torch: one build per torch version, never a stale one after an upgrade.
EXTENSION_NAME = "sie_cpu_kernels_" + re.sub(r"\W", "_", torch.__version__)
# The lines of a failed build that are not why it failed: ninja's progress, the commands it ran, its summary.
_BUILD_NOISE = re.compile(r"\[\d+/\d+\]|FAILED:|ninja: build stopped|Error building extension|.* -c \S+ -o ")
# Threads of one process that ask at once build or load once: functools.cache alone lets each of them run the build.
_building = threading.Lock()


def extensions_dir() -> str:
    """Where torch's extension builder keeps the built kernels: ``$TORCH_EXTENSIONS_DIR``, else its default."""
    from torch.utils.cpp_extension import get_default_build_root

    return os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root()


def cpu_can_run_kernels() -> bool:
    """Whether this CPU has the instruction sets the kernels are written in (x86 with AVX512-BF16)."""
    return platform.machine().lower() in ("x86_64", "amd64") and torch.cpu._is_avx512_bf16_supported()


@functools.cache
def cpu_extension():
    """``torch.ops.sie_cpu``, built or loaded from the cache; None where it cannot run (the log says why)."""
    with _building:
        return _built_extension()


@functools.cache
def _built_extension():
    if not cpu_can_run_kernels():
        logger.info("sie's C++ CPU kernels need an x86 CPU with AVX512-BF16; PyTorch's ops run instead")
        return None
    start = time.perf_counter()
    try:
        from torch.utils.cpp_extension import _get_build_directory, load

        build_folder = Path(_get_build_directory(EXTENSION_NAME, verbose=False))
        with build_lock(build_folder):
            remove_killed_builds_lock(build_folder / "lock")
            load(name=EXTENSION_NAME, sources=[str(source) for source in SOURCES], extra_cflags=_FLAGS,
                 extra_ldflags=["-fopenmp"], is_python_module=False)
    except Exception as error:  # no compiler, no ninja, a failed build: PyTorch's ops still serve
        logger.warning("sie's C++ CPU kernels could not be built (%s); PyTorch's ops run instead",
                       build_failure_reason(error))
        return None
    logger.info("sie's C++ CPU kernels ready in %.1f s (%s)", time.perf_counter() - start, EXTENSION_NAME)
    return torch.ops.sie_cpu


@contextlib.contextmanager
def build_lock(build_folder: Path) -> Iterator[None]:
    """Holds sie's lock on ``build_folder`` (an exclusive ``flock`` on its ``sie_build.lock``) while the block runs,
    waiting for another process's build first; the lock goes with the process, never stale."""
    build_folder.mkdir(parents=True, exist_ok=True)
    with open(build_folder / "sie_build.lock", "a") as handle:  # closing it releases the lock
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.warning("waiting for another process's build of sie's C++ CPU kernels (in %s)", build_folder)
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def remove_killed_builds_lock(lock: Path) -> None:
    """Removes torch's build lock file ``lock`` if there is one: called under ``build_lock``, when no sie process is
    building, it is what a killed build left behind."""
    if lock.exists():
        logger.warning("removing %s, the lock of a build of sie's C++ CPU kernels that was killed", lock)
        lock.unlink(missing_ok=True)


def build_failure_reason(error: BaseException) -> str:
    """Why a build failed, from torch's error: the compiler's or the shell's own lines (an error, a missing tool),
    at most three, without ninja's progress and the commands it ran; else the error's last line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    telling = [line for line in lines if not _BUILD_NOISE.match(line)]
    errors = [line for line in telling if re.search(r"error|not found", line, re.IGNORECASE)]
    chosen = list(dict.fromkeys(errors or telling))[:3]
    if chosen:
        return "; ".join(chosen)
    return lines[-1] if lines else type(error).__name__
