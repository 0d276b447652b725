"""sie's kernels: varlen attention (grouped key/value heads, sliding windows), residual + LayerNorm, bias + GELU,
residual + RMSNorm and gated activations (SwiGLU/GeGLU), each with triton/torch backends (attention also flash,
and cpu: sie's C++ kernel for bf16 on x86 CPUs with AVX512-BF16).

Models call :func:`resolve_kernels` once and hold the implementations it returns; the public ops below check
their inputs and take a ``backend=`` name ("auto" resolves from the tensor's device, then ``$SIE_BACKEND``).
"""

from .dispatch import (
    ATTENTION_BACKENDS,
    Kernels,
    KernelBackends,
    available_backends,
    bias_gelu,
    gated_activation,
    layer_norm,
    resolve_backends,
    resolve_kernels,
    rms_norm,
    varlen_attention,
)
from .environment import ENV_BACKEND

__all__ = [
    "ATTENTION_BACKENDS",
    "ENV_BACKEND",
    "KernelBackends",
    "Kernels",
    "available_backends",
    "bias_gelu",
    "gated_activation",
    "layer_norm",
    "resolve_backends",
    "resolve_kernels",
    "rms_norm",
    "varlen_attention",
]
