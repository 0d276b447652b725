"""act(gate) * up in one pass over the fused gate/up projection [rows, 2n]: SwiGLU ("silu", Qwen2/Qwen3) and GeGLU
("gelu", exact erf, ModernBERT).

Reference: sie/kernels/reference.py ``gated_activation_torch``. Elementwise and bound by memory: each program reads
a BLOCK_R x BLOCK_N tile of the gate and the matching tile of up, computes in fp32 and rounds once, where the
unfused ops write and re-read act(gate) in the activation dtype.
"""

import torch
import triton
import triton.language as tl

from .triton_support import check_kernel_dtype, on_device

_BLOCK_N = 1024
# Output elements one program writes (it reads twice as many).
_ELEMENTS_PER_PROGRAM = 4096


@triton.jit
def _gated_activation_kernel(
    X, OUT, n_rows, n_cols, stride_x_row, stride_o_row,
    ACTIVATION: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Grid (cdiv(n_rows, BLOCK_R), cdiv(n_cols, BLOCK_N)). X: [n_rows, 2 * n_cols], the gate in its first n_cols
    columns and up in the rest; OUT: [n_rows, n_cols]; columns contiguous. ACTIVATION: "silu" or "gelu"."""
    rows = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = (rows[:, None] < n_rows) & (cols[None, :] < n_cols)
    GATE = X + rows[:, None] * stride_x_row + cols[None, :]
    gate = tl.load(GATE, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(GATE + n_cols, mask=mask, other=0.0).to(tl.float32)
    if ACTIVATION == "silu":
        act = gate * tl.sigmoid(gate)
    else:
        tl.static_assert(ACTIVATION == "gelu", "ACTIVATION must be 'silu' or 'gelu'")
        act = 0.5 * gate * (1.0 + tl.erf(gate * 0.7071067811865476))
    tl.store(OUT + rows[:, None] * stride_o_row + cols[None, :], (act * up).to(OUT.dtype.element_ty), mask=mask)


def gated_activation_triton(x: torch.Tensor, activation: str) -> torch.Tensor:
    """Launch the gated activation kernel. Shapes as kernels.gated_activation (checked there).

    x: [rows, 2n] in a kernel dtype, rows may be strided; activation: "silu" or "gelu".
    Returns a contiguous [rows, n] in x's dtype.
    """
    check_kernel_dtype("gated_activation", x.dtype)
    if activation not in ("silu", "gelu"):
        raise ValueError(f"gated_activation: unknown activation {activation!r}; expected silu or gelu")
    if x.stride(-1) != 1:
        x = x.contiguous()
    n_rows, n_cols = x.shape[0], x.shape[1] // 2
    out = torch.empty((n_rows, n_cols), dtype=x.dtype, device=x.device)
    if out.numel() == 0:
        return out
    block_n = min(_BLOCK_N, triton.next_power_of_2(n_cols))
    block_r = _ELEMENTS_PER_PROGRAM // block_n
    grid = (triton.cdiv(n_rows, block_r), triton.cdiv(n_cols, block_n))
    with on_device(x):
        _gated_activation_kernel[grid](
            x, out, n_rows, n_cols, x.stride(0), out.stride(0),
            ACTIVATION=activation, BLOCK_R=block_r, BLOCK_N=block_n, num_warps=8,
        )
    return out
