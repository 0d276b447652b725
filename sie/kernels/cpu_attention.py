"""The ``cpu`` attention backend: sie's C++ kernel for x86 CPUs with AVX512-BF16 (``csrc/cpu_attention.cpp``, built
by ``cpu_extension.py``). bf16 only, head dims 32, 64 and 128; causal masks, windows, grouped key/value heads and
query-row subsets as the other backends.
"""

from __future__ import annotations

import torch

from sie.errors import BackendError

from .cpu_extension import cpu_extension

HEAD_DIMS = (32, 64, 128)


def cpu_attention_runs_on(device: torch.device, dtype: torch.dtype, head_dim: int | None = None) -> bool:
    """Whether the kernel serves ``device``, ``dtype`` and ``head_dim``: a CPU with AVX512-BF16, bf16, a head dim
    of 32, 64 or 128, and kernels that build (the first call builds them)."""
    if torch.device(device).type != "cpu" or dtype != torch.bfloat16:
        return False
    if head_dim is not None and head_dim not in HEAD_DIMS:
        return False
    return cpu_extension() is not None


def varlen_attention_cpu(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_seqlen: int,
    cu_seqlens_q: torch.Tensor,
    max_seqlen_q: int,
    *,
    causal: bool,
    softmax_scale: float,
    window: tuple[int, int] = (-1, -1),
) -> torch.Tensor:
    """Packed attention with the C++ kernel. q: bf16 [total_q, nheads, headdim]; k, v: bf16 [total_tokens,
    nheads_kv, headdim]; cu_seqlens, cu_seqlens_q: int32 [batch + 1]; max_seqlen, max_seqlen_q: unused (the kernel
    reads each sequence's length). Returns bf16 [total_q, nheads, headdim]; see :func:`varlen_attention`."""
    extension = cpu_extension()
    if extension is None:
        raise BackendError("attention backend 'cpu' is not available on this machine (see the log for why)")
    return extension.varlen_attention_bf16(q, k, v, cu_seqlens, cu_seqlens_q, causal, softmax_scale, *window)
