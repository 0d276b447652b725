"""Residual add + LayerNorm in one pass over [total_tokens, hidden], fp32 statistics.

Reference: sie/kernels/reference.py ``layer_norm_torch``. Each program normalises BLOCK_R whole rows held in
registers, so x and the residual are read once and the output written once: the op is bound by memory.
"""

import torch
import triton
import triton.language as tl

from .triton_support import check_kernel_dtype, check_tensors, on_device, rows_per_program


@triton.jit
def _layer_norm_kernel(
    X, RESIDUAL, W, B, OUT,
    n_rows, stride_x_row, stride_r_row, stride_o_row, eps,
    HIDDEN: tl.constexpr, HAS_RESIDUAL: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_H: tl.constexpr,
):
    """Grid (cdiv(n_rows, BLOCK_R),). X, RESIDUAL, OUT: [n_rows, HIDDEN], columns contiguous; W, B: [HIDDEN]."""
    rows = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.arange(0, BLOCK_H)
    col_mask = cols < HIDDEN
    mask = (rows[:, None] < n_rows) & col_mask[None, :]
    h = tl.load(X + rows[:, None] * stride_x_row + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    if HAS_RESIDUAL:
        h += tl.load(RESIDUAL + rows[:, None] * stride_r_row + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    mean = tl.sum(h, axis=1) / HIDDEN
    centered = tl.where(col_mask[None, :], h - mean[:, None], 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(centered * centered, axis=1) / HIDDEN + eps)
    w = tl.load(W + cols, mask=col_mask, other=0.0).to(tl.float32)
    b = tl.load(B + cols, mask=col_mask, other=0.0).to(tl.float32)
    y = centered * rstd[:, None] * w[None, :] + b[None, :]
    tl.store(OUT + rows[:, None] * stride_o_row + cols[None, :], y.to(OUT.dtype.element_ty), mask=mask)


def layer_norm_triton(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    eps: float,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """Launch the LayerNorm kernel. Shapes as kernels.layer_norm (checked there).

    x, residual: [total_tokens, hidden] in one kernel dtype, rows may be strided; weight, bias: [hidden], any
    kernel dtype (read in fp32). Returns a contiguous [total_tokens, hidden] in x's dtype.
    """
    check_kernel_dtype("layer_norm", x.dtype)
    check_kernel_dtype("layer_norm", weight.dtype)
    check_tensors("layer_norm", weight.dtype, x.device, weight=weight, bias=bias)
    if residual is not None:
        check_tensors("layer_norm", x.dtype, x.device, residual=residual)
    x, residual, weight, bias = (
        t if t is None or t.stride(-1) == 1 else t.contiguous() for t in (x, residual, weight, bias)
    )
    n_rows, hidden = x.shape
    out = torch.empty((n_rows, hidden), dtype=x.dtype, device=x.device)
    if n_rows == 0 or hidden == 0:
        return out
    block_h = triton.next_power_of_2(hidden)
    block_r = rows_per_program(block_h)
    with on_device(x):
        _layer_norm_kernel[(triton.cdiv(n_rows, block_r),)](
            x, x if residual is None else residual, weight, bias, out,
            n_rows, x.stride(0), 0 if residual is None else residual.stride(0), out.stride(0), eps,
            HIDDEN=hidden, HAS_RESIDUAL=residual is not None, BLOCK_R=block_r, BLOCK_H=block_h,
            num_warps=8 if block_r * block_h >= 4096 else 4,
        )
    return out
