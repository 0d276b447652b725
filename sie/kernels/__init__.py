"""sie's kernels: varlen attention, residual + LayerNorm and bias + GELU, each with flash/triton/torch backends.

Models call :func:`resolve_kernels` once and hold the implementations it returns; the public ops below check
their inputs and take a ``backend=`` name ("auto" resolves from the tensor's device, then ``$SIE_BACKEND``).
"""

from .dispatch import (
    ATTENTION_BACKENDS,
    Kernels,
    KernelBackends,
    available_backends,
    bias_gelu,
    layer_norm,
    resolve_backends,
    resolve_kernels,
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
    "layer_norm",
    "resolve_backends",
    "resolve_kernels",
    "varlen_attention",
]
