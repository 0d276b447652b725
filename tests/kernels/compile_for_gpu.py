"""Compile every Triton kernel for NVIDIA GPUs without one: Triton's front end, its LLVM passes and the ptxas it
ships, as a first CUDA launch would. Catches what the CPU interpreter accepts but the compiler rejects.

Run in a process without TRITON_INTERPRET (the flag changes what @triton.jit returns):
    python -m tests.kernels.compile_for_gpu [capability ...]      (default: 90, the H100)
"""

import sys

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from sie.kernels import triton_attention, triton_gated_activation, triton_gelu, triton_layer_norm, triton_rms_norm

TRITON_TYPES = {"fp16": "*fp16", "bf16": "*bf16", "fp32": "*fp32"}


def compile_kernel(kernel, target: GPUTarget, pointers: dict[str, str], scalars: dict[str, str], constexprs: dict,
                   **options) -> None:
    names = kernel.arg_names
    signature = {name: pointers.get(name) or scalars.get(name) or "constexpr" for name in names}
    source = ASTSource(fn=kernel, signature=signature,
                       constexprs={(names.index(name),): value for name, value in constexprs.items()})
    triton.compile(source, target=target, options=options)


def attention_launches():
    """(dtype, constexprs, options): every tuned config in fp16, then one launch per other variant: causal (a right
    bound), sliding windows (both bounds, the left alone) in the full and the rows configs, bf16, fp32, headdim 128.
    Grouped key/value heads need no variant of their own: the group size is a runtime argument. (fp32 compiles
    slowly, 10 s at headdim 64 and 45 s at 128 with a window: it appears once.)"""
    configs = triton_attention._FULL_CONFIGS + triton_attention._ROWS_CONFIGS
    rows_config = triton_attention._ROWS_CONFIGS[0]
    unbounded, causal, window, left = (False, False), (False, True), (True, True), (True, False)
    launches = [("fp16", unbounded, 64, config) for config in configs]
    launches += [
        ("fp16", causal, 64, configs[0]), ("bf16", causal, 64, configs[0]), ("fp32", unbounded, 64, configs[2]),
        ("fp16", window, 64, configs[0]), ("bf16", window, 128, configs[1]), ("fp16", left, 64, configs[2]),
        ("fp16", window, 128, rows_config), ("bf16", causal, 128, rows_config),
    ]
    for dtype, (has_left, has_right), head_dim, config in launches:
        constexprs = dict(HEAD_DIM=head_dim, BLOCK_D=head_dim, HAS_LEFT_BOUND=has_left, HAS_RIGHT_BOUND=has_right,
                          UPCAST=False, DOT_PRECISION="ieee" if dtype == "fp32" else "tf32", **config.kwargs)
        yield dtype, constexprs, dict(num_warps=config.num_warps, num_stages=config.num_stages)


def compile_all(capability: int) -> int:
    target = GPUTarget("cuda", capability, 32)
    count = 0
    strides = ("stride_q_tok", "stride_q_head", "stride_k_tok", "stride_k_head", "stride_v_tok", "stride_v_head",
               "stride_o_tok", "stride_o_head")
    for dtype, constexprs, options in attention_launches():
        pointers = dict.fromkeys(("Q", "K", "V", "OUT"), TRITON_TYPES[dtype])
        pointers.update(CU_SEQLENS_Q="*i32", CU_SEQLENS_K="*i32")
        scalars = dict.fromkeys((*strides, "group", "window_left", "window_right"), "i32") | {"qk_scale": "fp32"}
        compile_kernel(triton_attention._attention_kernel, target, pointers, scalars, constexprs, **options)
        count += 1
    for dtype in TRITON_TYPES:
        pointers = dict.fromkeys(("X", "RESIDUAL", "OUT"), TRITON_TYPES[dtype]) | {"W": "*fp32", "B": "*fp32"}
        scalars = dict.fromkeys(("n_rows", "stride_x_row", "stride_r_row", "stride_o_row"), "i32") | {"eps": "fp32"}
        constexprs = dict(HIDDEN=384, HAS_RESIDUAL=True, BLOCK_R=16, BLOCK_H=512)
        compile_kernel(triton_layer_norm._layer_norm_kernel, target, pointers, scalars, constexprs, num_warps=8)
        pointers = dict.fromkeys(("X", "BIAS", "OUT"), TRITON_TYPES[dtype])
        scalars = dict.fromkeys(("n_rows", "n_cols", "stride_x_row", "stride_o_row"), "i32")
        compile_kernel(triton_gelu._bias_gelu_kernel, target, pointers, scalars, dict(BLOCK_R=8, BLOCK_N=1024),
                       num_warps=8)
        pointers = dict.fromkeys(("X", "RESIDUAL", "OUT", "SUMMED"), TRITON_TYPES[dtype]) | {"W": "*fp32"}
        scalars = dict.fromkeys(("n_rows", "stride_x_row", "stride_r_row", "stride_o_row", "stride_s_row"), "i32")
        constexprs = dict(HIDDEN=896, HAS_RESIDUAL=True, ROUND_BF16=False, BLOCK_R=8, BLOCK_H=1024)
        compile_kernel(triton_rms_norm._rms_norm_kernel, target, pointers, scalars | {"eps": "fp32"}, constexprs,
                       num_warps=8)
        pointers = dict.fromkeys(("X", "OUT"), TRITON_TYPES[dtype])
        scalars = dict.fromkeys(("n_rows", "n_cols", "stride_x_row", "stride_o_row"), "i32")
        for activation in ("silu", "gelu"):
            compile_kernel(triton_gated_activation._gated_activation_kernel, target, pointers, scalars,
                           dict(ACTIVATION=activation, BLOCK_R=4, BLOCK_N=1024), num_warps=8)
        count += 5
    return count


if __name__ == "__main__":
    for capability in [int(c) for c in sys.argv[1:]] or [90]:
        print(f"sm_{capability}: {compile_all(capability)} kernels compiled")
