"""The ``torch`` backend: plain PyTorch versions of every op, the CPU path and the kernels' reference.

Kept free of Triton so that ``import sie`` and the CPU engine work where Triton is not installed.
Each function computes in fp32 (or wider, for float64 inputs) and returns the input's dtype.
"""

import torch
import torch.nn.functional as F


def varlen_attention_torch(
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
    """Attention over packed sequences, one SDPA call per sequence.

    q: [total_q, nheads, headdim]; k, v: [total_tokens, nheads_kv, headdim] with nheads a multiple of nheads_kv
    (grouped-query attention: query head h reads key/value head h // (nheads // nheads_kv)); cu_seqlens (keys) and
    cu_seqlens_q (queries): int32 [batch + 1]; max_seqlen, max_seqlen_q: unused here (the kernels size their grids
    with them); window: (left, right) keys a query sees around its own position, -1 for no bound.
    Returns [total_q, nheads, headdim] in q's dtype.

    Measured on 2 CPU cores (100 sequences of 20-250 tokens, 12 heads, headdim 32), a loop of 4-D SDPA calls
    with a batch of one beats padding to the longest sequence (1.5-3x), length-bucketed padding and nested
    (jagged) tensors, and is exact per sequence. The 4-D form matters: 3-D inputs miss PyTorch's fused CPU
    kernel and run about 2x slower. Grouped key/value heads are repeated per sequence: SDPA's own ``enable_gqa``
    takes its slow generic path on CPU (4x slower at 16/2 heads). Causal masks and windows align to the bottom
    right (flash-attn's convention).
    """
    out = torch.empty_like(q)
    groups = q.shape[1] // k.shape[1]
    bounds_k = cu_seqlens.tolist()
    bounds_q = bounds_k if cu_seqlens_q is cu_seqlens else cu_seqlens_q.tolist()
    for b in range(len(bounds_k) - 1):
        qs, qe, ks, ke = bounds_q[b], bounds_q[b + 1], bounds_k[b], bounds_k[b + 1]
        if qe == qs:
            continue
        # [L, nheads, headdim] -> [1, nheads, L, headdim] as strided views, no copies.
        qb, kb, vb = (t.transpose(0, 1).unsqueeze(0) for t in (q[qs:qe], k[ks:ke], v[ks:ke]))
        if groups > 1:
            kb, vb = (t.repeat_interleave(groups, dim=1) for t in (kb, vb))
        mask = visibility_mask(qe - qs, ke - ks, causal, window, q.device)
        ob = F.scaled_dot_product_attention(
            qb, kb, vb, attn_mask=mask, is_causal=causal and mask is None, scale=softmax_scale
        )
        out[qs:qe] = ob[0].transpose(0, 1)
    return out


def visibility_mask(
    len_q: int, len_k: int, causal: bool, window: tuple[int, int], device: torch.device
) -> torch.Tensor | None:
    """bool [len_q, len_k], True where query i sees key j, aligned to the bottom right: query i sits at key
    position p = i + len_k - len_q and sees keys p - left <= j <= p + right (right = 0 when causal; -1: no bound).

    None when SDPA needs no mask: every key visible, or a square causal mask (its ``is_causal`` aligns top left,
    which is the bottom right when len_q == len_k).
    """
    left, right = window
    if causal:
        right = 0 if right < 0 else min(right, 0)
    if left < 0 and right < 0:
        return None
    if causal and left < 0 and len_q == len_k:
        return None
    position = torch.arange(len_q, device=device)[:, None] + (len_k - len_q)
    keys = torch.arange(len_k, device=device)[None, :]
    visible = torch.ones(len_q, len_k, dtype=torch.bool, device=device)
    if left >= 0:
        visible &= keys >= position - left
    if right >= 0:
        visible &= keys <= position + right
    return visible


def layer_norm_torch(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    eps: float,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """LayerNorm(x + residual) over the last dim with fp32 statistics.

    x, residual: [total_tokens, hidden]; weight, bias: [hidden]. Returns [total_tokens, hidden] in x's dtype.
    PyTorch's LayerNorm already accumulates fp16/bf16 inputs in fp32 (on CPU and CUDA), so no upcast copy is
    made: on CPU in bf16 the copies cost a fifth of the engine's time.
    """
    h = x if residual is None else x + residual
    return F.layer_norm(h, (h.shape[-1],), weight.to(h.dtype), bias.to(h.dtype), eps)


def linear_gelu_torch(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Exact (erf) GELU(x @ weight.T + bias), the FFN's first half. x: [rows, in]; weight: [out, in]; bias: [out].

    Returns [rows, out] in x's dtype. The BLAS matmul adds the bias as it writes its output; a separate bias
    pass would read and write the whole [rows, out] tensor once more.
    """
    return F.gelu(F.linear(x, weight, bias))


def rms_norm_torch(
    x: torch.Tensor, weight: torch.Tensor, eps: float, residual: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """RMSNorm(x + residual) with fp32 statistics, and the sum itself (the decoder's residual stream).

    x, residual: [rows, hidden]; weight: [hidden]. Returns (normed, summed), both [rows, hidden] in x's dtype;
    summed is x when there is no residual. Rounds where transformers' Qwen RMSNorm does: the sum and the
    normalised value in x's dtype, then the weight product.
    """
    summed = x if residual is None else x + residual
    h = summed.float()
    normed = (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)
    return weight.to(x.dtype) * normed, summed


def gated_activation_torch(x: torch.Tensor, activation: str) -> torch.Tensor:
    """act(x[:, :n]) * x[:, n:], the gated MLP's middle (SwiGLU with "silu", GeGLU with exact "gelu").

    x: [rows, 2n] (the fused gate/up projection, gate first). Returns [rows, n] in x's dtype.
    """
    gate, up = x.chunk(2, dim=-1)
    return GATED_ACTIVATIONS[activation](gate) * up


GATED_ACTIVATIONS = {"silu": F.silu, "gelu": F.gelu}


def bias_gelu_torch(x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Exact (erf) GELU(x + bias), as BERT uses. x: [total_tokens, n]; bias: [n]. Returns x's dtype.

    PyTorch evaluates GELU on fp16/bf16 in fp32 internally; only the bias add rounds to x's dtype.
    """
    return F.gelu(x + bias.to(x.dtype))
