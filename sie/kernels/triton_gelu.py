"""Bias add + exact (erf) GELU, as BERT's intermediate layer uses, in one pass over [total_tokens, n].

Reference: sie/kernels/reference.py ``bias_gelu_torch``. Elementwise and bound by memory: each program handles a
BLOCK_R x BLOCK_N tile, so the bias is read once per tile, not once per element.
"""

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from .triton_support import check_kernel_dtype, check_tensors, on_device

_BLOCK_N = 1024
_ELEMENTS_PER_PROGRAM = 8192


@triton.jit
def _bias_gelu_kernel(
    X, BIAS, OUT, n_rows, n_cols, stride_x_row, stride_o_row,
    BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Grid (cdiv(n_rows, BLOCK_R), cdiv(n_cols, BLOCK_N)). X, OUT: [n_rows, n_cols], columns contiguous."""
    rows = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    col_mask = cols < n_cols
    mask = (rows[:, None] < n_rows) & col_mask[None, :]
    x = tl.load(X + rows[:, None] * stride_x_row + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    x += tl.load(BIAS + cols, mask=col_mask, other=0.0).to(tl.float32)[None, :]
    y = 0.5 * x * (1.0 + tl.erf(x * 0.7071067811865476))
    tl.store(OUT + rows[:, None] * stride_o_row + cols[None, :], y.to(OUT.dtype.element_ty), mask=mask)


def linear_gelu_triton(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """GELU(x @ weight.T + bias): the matmul without its bias, then the fused bias + GELU kernel.

    x: [rows, in]; weight: [out, in]; bias: [out]. Returns [rows, out] in x's dtype.
    """
    return bias_gelu_triton(F.linear(x, weight), bias)


def bias_gelu_triton(x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Launch the bias + GELU kernel. Shapes as kernels.bias_gelu (checked there).

    x: [total_tokens, n], rows may be strided; bias: [n], any kernel dtype (read in fp32).
    Returns a contiguous [total_tokens, n] in x's dtype.
    """
    check_kernel_dtype("bias_gelu", x.dtype)
    check_kernel_dtype("bias_gelu", bias.dtype)
    check_tensors("bias_gelu", bias.dtype, x.device, bias=bias)
    x, bias = (t if t.stride(-1) == 1 else t.contiguous() for t in (x, bias))
    n_rows, n_cols = x.shape
    out = torch.empty((n_rows, n_cols), dtype=x.dtype, device=x.device)
    if out.numel() == 0:
        return out
    block_n = min(_BLOCK_N, triton.next_power_of_2(n_cols))
    block_r = _ELEMENTS_PER_PROGRAM // block_n
    grid = (triton.cdiv(n_rows, block_r), triton.cdiv(n_cols, block_n))
    with on_device(x):
        _bias_gelu_kernel[grid](
            x, bias, out, n_rows, n_cols, x.stride(0), out.stride(0), BLOCK_R=block_r, BLOCK_N=block_n, num_warps=8
        )
    return out
