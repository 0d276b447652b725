"""sie's C++ CPU kernels (``csrc/``): attention in bf16 (``cpu_attention.cpp``) and the int8 mode's quantize and
rescale passes (``cpu_int8.cpp``), registered as ``torch.ops.sie_cpu``.

They are written for x86 CPUs with AVX512-BF16 and built on first use by torch's extension builder (ninja and the
system's C++ compiler), once per machine and torch version, into torch's extension cache
(``$TORCH_EXTENSIONS_DIR``, by default ``~/.cache/torch_extensions``): 7-20 s on 2 cores, then well under a
second to load. Where they cannot be built (another CPU, no compiler), :func:`cpu_extension` returns None, the
reason is logged once, and PyTorch's own ops run instead.
"""

from __future__ import annotations

import functools
import logging
import os
import platform
import re
import time
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

SOURCES = [Path(__file__).parent / "csrc" / name for name in ("cpu_attention.cpp", "cpu_int8.cpp")]
# The instruction sets the kernels are written in, not -march=native: the cached library does not depend on
# which CPU built it, only on the one that loads it having these. No contraction into fused multiply-adds: the
# int8 rescale equals the eager ops bit for bit.
_FLAGS = ["-O3", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx512bf16", "-mfma",
          "-ffp-contract=off"]


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
    if not cpu_can_run_kernels():
        logger.info("sie's C++ CPU kernels need an x86 CPU with AVX512-BF16; PyTorch's ops run instead")
        return None
    # The library links against this torch: one build per torch version, never a stale one after an upgrade.
    name = "sie_cpu_kernels_" + re.sub(r"\W", "_", torch.__version__)
    start = time.perf_counter()
    try:
        from torch.utils.cpp_extension import load

        load(name=name, sources=[str(source) for source in SOURCES], extra_cflags=_FLAGS, is_python_module=False)
    except Exception as error:  # no compiler, no ninja, a failed build: PyTorch's ops still serve
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        logger.warning("sie's C++ CPU kernels could not be built (%s); PyTorch's ops run instead", reason)
        return None
    logger.info("sie's C++ CPU kernels ready in %.1f s (%s)", time.perf_counter() - start, name)
    return torch.ops.sie_cpu
