"""Rotary position embeddings on packed ``(total_tokens, nheads, headdim)`` queries and keys.

Positions restart at 0 in every packed sequence (``PackedBatch.position_ids``), so a sequence is rotated
exactly as it would be alone. The angles are computed in fp32 once per batch and shared by every layer.
"""

from __future__ import annotations

import torch


class RotaryEmbedding:
    """The angles of "rotate half" RoPE (transformers' Llama/Qwen convention) with base ``theta``."""

    def __init__(self, head_dim: int, theta: float) -> None:
        self.head_dim = head_dim
        # On the CPU in fp32, as transformers computes them, so the frequencies agree bit for bit (and a module
        # built on the meta device still gets real ones).
        exponents = torch.arange(0, head_dim, 2, dtype=torch.int64, device="cpu").float() / head_dim
        self.inv_freq = 1.0 / (theta**exponents)
        # One copy per device, made at the first batch: a copy from the host inside a CUDA graph capture fails.
        self._on_device: dict[torch.device, torch.Tensor] = {}

    def cos_sin(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin of every token's angles, each ``(total_tokens, 1, headdim // 2)`` in ``dtype`` (the two
        halves of a head share their angles)."""
        inv_freq = self._on_device.get(position_ids.device)
        if inv_freq is None:
            inv_freq = self._on_device[position_ids.device] = self.inv_freq.to(position_ids.device)
        angles = position_ids.float()[:, None] * inv_freq[None, :]
        return angles.cos().to(dtype)[:, None, :], angles.sin().to(dtype)[:, None, :]


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x rotated, ``x * cos + rotate_half(x) * sin`` written half by half: the same roundings as transformers'
    form (``a + (-b) * s`` is ``a - b * s``) in about a third of the passes over x, with no concatenation.

    x: ``(rows, nheads, headdim)``; cos, sin: ``(rows, 1, headdim // 2)``. Returns a new ``(rows, nheads, headdim)``.
    """
    half = x.shape[-1] // 2
    first, second = x[..., :half], x[..., half:]
    out = torch.empty_like(x)
    torch.sub(first * cos, second * sin, out=out[..., :half])
    torch.add(second * cos, first * sin, out=out[..., half:])
    return out
