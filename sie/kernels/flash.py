"""The ``flash`` attention backend: the flash-attn package's varlen function, else PyTorch's own.

Both are CUDA-only fp16/bf16 kernels. Probing never touches CUDA and imports flash-attn only when it is
installed; the device check runs when a model resolves its backends (sie/kernels/dispatch.py).
"""

import functools
import importlib.util
import logging

import torch

logger = logging.getLogger(__name__)


@functools.cache
def flash_attn_installed() -> bool:
    """Whether the flash-attn package imports. Checked by importing it once: flash-attn ships no wheels, and a
    build made against another torch is found by the import system yet fails to load."""
    if importlib.util.find_spec("flash_attn") is None:
        return False
    try:
        import flash_attn  # noqa: F401
    except Exception as error:  # an ABI mismatch surfaces as ImportError, OSError or RuntimeError
        logger.warning("flash-attn is installed but does not import (%s); using PyTorch's flash kernel", error)
        return False
    return True


def torch_flash_varlen_available() -> bool:
    """Whether this torch build exposes its flash varlen forward (a stable aten op since torch 2.2)."""
    return hasattr(torch.ops.aten, "_flash_attention_forward")


def flash_implementation() -> str | None:
    """Name of the implementation the flash backend calls: "flash_attn", "torch" or None."""
    if flash_attn_installed():
        return "flash_attn"
    if torch_flash_varlen_available():
        return "torch"
    return None


def varlen_attention_flash(
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
    """Flash varlen attention. Shapes as sie.kernels.varlen_attention (grouped key/value heads and windows are
    native to both kernels); CUDA, fp16/bf16 only.

    Returns [total_q, nheads, headdim] in q's dtype.
    """
    if flash_attn_installed():
        from flash_attn import flash_attn_varlen_func

        return flash_attn_varlen_func(
            q, k, v, cu_seqlens_q, cu_seqlens, max_seqlen_q, max_seqlen,
            softmax_scale=softmax_scale, causal=causal, window_size=window,
        )
    # The public torch.nn.attention.varlen.varlen_attn changed its signature between 2.9 and 2.12
    # (is_causal became window_size); the aten op underneath kept one schema.
    left, right = (None if side < 0 else side for side in window)
    return torch.ops.aten._flash_attention_forward(
        q, k, v, cu_seqlens_q, cu_seqlens, max_seqlen_q, max_seqlen, 0.0, causal, False, scale=softmax_scale,
        window_size_left=left, window_size_right=right,
    )[0]
