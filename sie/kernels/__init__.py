"""sie's kernels: varlen attention, residual + LayerNorm and bias + GELU, each with flash/triton/torch backends.

Import this package as ``sie.kernels``. The ops take ``backend=`` names from :func:`resolve_backends`
("auto" resolves per call from the tensor's device).
"""

from .dispatch import (
    ATTENTION_BACKENDS,
    ENV_ATTENTION_BACKEND,
    KernelBackends,
    available_backends,
    bias_gelu,
    layer_norm,
    resolve_backends,
    varlen_attention,
)

__all__ = [
    "ATTENTION_BACKENDS",
    "ENV_ATTENTION_BACKEND",
    "KernelBackends",
    "available_backends",
    "bias_gelu",
    "layer_norm",
    "resolve_backends",
    "varlen_attention",
]
