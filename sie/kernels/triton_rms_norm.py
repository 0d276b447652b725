"""Residual add + RMSNorm in one pass over [rows, hidden], fp32 statistics, writing the norm and the sum.

Reference: sie/kernels/reference.py ``rms_norm_torch``. A pre-norm decoder layer (Qwen2/Qwen3) carries the residual
stream x + residual into the next layer and normalises it for this one: each program reads BLOCK_R whole rows once
and writes both, so the op is bound by memory. Rounds where the reference does: the sum and the normalised value in
x's dtype, then the product with the weight (rounded to x's dtype) once more.
"""

import torch
import triton
import triton.language as tl

from .triton_support import (
    check_kernel_dtype,
    check_tensors,
    on_device,
    round_bf16_in_software,
    rows_per_program,
    to_rounded,
)


@triton.jit
def _rms_norm_kernel(
    X, RESIDUAL, W, OUT, SUMMED,
    n_rows, stride_x_row, stride_r_row, stride_o_row, stride_s_row, eps,
    HIDDEN: tl.constexpr, HAS_RESIDUAL: tl.constexpr, ROUND_BF16: tl.constexpr, BLOCK_R: tl.constexpr,
    BLOCK_H: tl.constexpr,
):
    """Grid (cdiv(n_rows, BLOCK_R),). X, RESIDUAL, OUT, SUMMED: [n_rows, HIDDEN], columns contiguous; W: [HIDDEN].
    SUMMED is written only with HAS_RESIDUAL (without it, the sum is X itself). ROUND_BF16: see to_rounded."""
    rows = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.arange(0, BLOCK_H)
    col_mask = cols < HIDDEN
    mask = (rows[:, None] < n_rows) & col_mask[None, :]
    h = tl.load(X + rows[:, None] * stride_x_row + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    if HAS_RESIDUAL:
        h += tl.load(RESIDUAL + rows[:, None] * stride_r_row + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        summed = to_rounded(h, SUMMED.dtype.element_ty, ROUND_BF16)
        tl.store(SUMMED + rows[:, None] * stride_s_row + cols[None, :], summed, mask=mask)
        h = summed.to(tl.float32)  # the norm reads the sum as the next layer will: rounded to x's dtype
    # Masked columns load as 0 and add nothing to the sum of squares.
    rstd = tl.rsqrt(tl.sum(h * h, axis=1) / HIDDEN + eps)
    normed = to_rounded(h * rstd[:, None], OUT.dtype.element_ty, ROUND_BF16).to(tl.float32)
    w = tl.load(W + cols, mask=col_mask, other=0.0).to(tl.float32)
    w = to_rounded(w, OUT.dtype.element_ty, ROUND_BF16).to(tl.float32)
    y = to_rounded(normed * w[None, :], OUT.dtype.element_ty, ROUND_BF16)
    tl.store(OUT + rows[:, None] * stride_o_row + cols[None, :], y, mask=mask)


def rms_norm_triton(
    x: torch.Tensor,
    weight: torch.Tensor,
    eps: float,
    residual: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the RMSNorm kernel. Shapes as kernels.rms_norm (checked there).

    x, residual: [rows, hidden] in one kernel dtype, rows may be strided; weight: [hidden], any kernel dtype
    (rounded to x's dtype, as the reference does). Returns (normed, summed): normed a contiguous [rows, hidden] in
    x's dtype; summed a contiguous [rows, hidden] in x's dtype, or x itself when residual is None.
    """
    check_kernel_dtype("rms_norm", x.dtype)
    check_kernel_dtype("rms_norm", weight.dtype)
    check_tensors("rms_norm", weight.dtype, x.device, weight=weight)
    if residual is not None:
        check_tensors("rms_norm", x.dtype, x.device, residual=residual)
    source = x
    x, residual, weight = (t if t is None or t.stride(-1) == 1 else t.contiguous() for t in (x, residual, weight))
    n_rows, hidden = x.shape
    out = torch.empty((n_rows, hidden), dtype=x.dtype, device=x.device)
    summed = source if residual is None else torch.empty_like(out)
    if n_rows == 0 or hidden == 0:
        return out, summed
    block_h = triton.next_power_of_2(hidden)
    block_r = rows_per_program(block_h)
    with on_device(x):
        _rms_norm_kernel[(triton.cdiv(n_rows, block_r),)](
            x, x if residual is None else residual, weight, out, summed,
            n_rows, x.stride(0), 0 if residual is None else residual.stride(0), out.stride(0), summed.stride(0), eps,
            HIDDEN=hidden, HAS_RESIDUAL=residual is not None, ROUND_BF16=round_bf16_in_software(x.dtype),
            BLOCK_R=block_r, BLOCK_H=block_h,
            num_warps=8 if block_r * block_h >= 4096 else 4,
        )
    return out, summed
