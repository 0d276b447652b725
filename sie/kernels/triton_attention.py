"""Varlen flash-attention forward in Triton: packed sequences, bounds from cu_seqlens, nothing padded.

Reference: sie/kernels/reference.py ``varlen_attention_torch``. One program per (query block, sequence, head) runs
the flash-attention loop over its sequence's key blocks: online softmax in fp32 with exp2, no [L, L] matrix.
Grouped key/value heads (GQA) are read in place: query head h reads key/value head h // group.
Causal attention and sliding windows are one mechanism, bounds on the keys a query sees around its own position
(causal is the right bound 0): a query block visits only the key blocks some of its rows see, so a window of w
costs O(L * w), and key blocks that every row sees whole skip the masks; only the edges pay for them.
"""

import torch
import triton
import triton.language as tl

from .triton_support import AUTOTUNED_LAUNCH, autotune, check_kernel_dtype, check_tensors, on_device, upcast_bf16

LOG2_E = 1.4426950408889634

# Short lists: every config compiles once per key (head_dim, window flags, dtype) before its first timing.
_FULL_CONFIGS = [
    triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s)
    for m, n, w, s in [(128, 64, 4, 3), (128, 128, 8, 3), (64, 64, 4, 3)]
]
# Queries that are a few rows per sequence (the CLS or last rows): the smallest query block tl.dot allows.
_ROWS_CONFIGS = [
    triton.Config({"BLOCK_M": 16, "BLOCK_N": n}, num_warps=w, num_stages=s)
    for n, w, s in [(64, 4, 3), (128, 4, 3)]
]
# Interpreted programs cost about the same whatever their block size: fewer, larger blocks keep tests fast.
_INTERPRETED_CONFIG = triton.Config({"BLOCK_M": 32, "BLOCK_N": 32})
_KEY = ["HEAD_DIM", "HAS_LEFT_BOUND", "HAS_RIGHT_BOUND"]
# The running max starts finite, so a row whose first key blocks are all hidden from it (a window's left edge)
# keeps exp2(-inf - m) = 0 instead of exp2(-inf + inf) = NaN.
_NO_SCORE = tl.constexpr(-1.0e30)


@triton.jit
def _attend_blocks(
    acc, m_i, l_i, q, K_BLOCK, V_BLOCK, stride_k_tok, stride_v_tok,
    positions, offs_n, d_mask, start, end, k_len, window_left, window_right, qk_scale,
    IS_MASKED: tl.constexpr, HAS_LEFT_BOUND: tl.constexpr, HAS_RIGHT_BOUND: tl.constexpr, UPCAST: tl.constexpr,
    DOT_PRECISION: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Fold key blocks [start, end) of one sequence into the running (acc, m_i, l_i) of a query block.

    K_BLOCK, V_BLOCK: [BLOCK_N, BLOCK_D] pointers to the sequence's first key/value block. positions: [BLOCK_M],
    each query row's key position; a row sees keys positions - window_left .. positions + window_right (each bound
    only when its flag is set). qk_scale is softmax_scale * log2(e): scores go to base 2 inside one fused
    multiply-add with the running max.
    """
    for start_n in range(start, end, BLOCK_N):
        cols = start_n + offs_n
        if IS_MASKED:
            kv_mask = (cols[:, None] < k_len) & d_mask[None, :]
        else:
            kv_mask = d_mask[None, :]
        k = tl.load(K_BLOCK + start_n * stride_k_tok, mask=kv_mask, other=0.0)
        v = tl.load(V_BLOCK + start_n * stride_v_tok, mask=kv_mask, other=0.0)
        if UPCAST:
            k = k.to(tl.float32)
            v = v.to(tl.float32)
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION)
        if IS_MASKED:
            visible = cols[None, :] < k_len
            if HAS_LEFT_BOUND:
                visible = visible & (cols[None, :] >= positions[:, None] - window_left)
            if HAS_RIGHT_BOUND:
                visible = visible & (cols[None, :] <= positions[:, None] + window_right)
            s = tl.where(visible, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1) * qk_scale)
        p = tl.exp2(s * qk_scale - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=DOT_PRECISION)
        m_i = m_new
    return acc, m_i, l_i


@triton.jit
def _attention_kernel(
    Q, K, V, OUT, CU_SEQLENS_Q, CU_SEQLENS_K,
    stride_q_tok, stride_q_head, stride_k_tok, stride_k_head,
    stride_v_tok, stride_v_head, stride_o_tok, stride_o_head,
    qk_scale, group, window_left, window_right,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, HAS_LEFT_BOUND: tl.constexpr, HAS_RIGHT_BOUND: tl.constexpr,
    UPCAST: tl.constexpr, DOT_PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Grid (cdiv(max_seqlen_q, BLOCK_M), batch, nheads). Q, OUT: [total_q, nheads, headdim]; K, V:
    [total_tokens, nheads // group, headdim], last dim contiguous; CU_SEQLENS_Q, CU_SEQLENS_K: int32 [batch + 1].
    window_left/window_right: the key bounds around each query's position, read only with their flags (causal:
    HAS_RIGHT_BOUND with window_right = 0)."""
    start_m = tl.program_id(0)
    seq = tl.program_id(1)
    head = tl.program_id(2)
    kv_head = head // group
    q_start = tl.load(CU_SEQLENS_Q + seq)
    q_len = tl.load(CU_SEQLENS_Q + seq + 1) - q_start
    if start_m * BLOCK_M >= q_len:
        return
    k_start = tl.load(CU_SEQLENS_K + seq)
    k_len = tl.load(CU_SEQLENS_K + seq + 1) - k_start

    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    d_mask = offs_d < HEAD_DIM
    q_rows = q_start.to(tl.int64) + offs_m
    q_mask = (offs_m[:, None] < q_len) & d_mask[None, :]
    q = tl.load(Q + q_rows[:, None] * stride_q_tok + head * stride_q_head + offs_d[None, :], mask=q_mask, other=0.0)
    if UPCAST:
        q = q.to(tl.float32)

    k_rows = k_start.to(tl.int64) + offs_n
    K_BLOCK = K + k_rows[:, None] * stride_k_tok + kv_head * stride_k_head + offs_d[None, :]
    V_BLOCK = V + k_rows[:, None] * stride_v_tok + kv_head * stride_v_head + offs_d[None, :]

    # Bottom-right alignment: query row i sits at key position i + (k_len - q_len).
    positions = offs_m + (k_len - q_len)
    first = start_m * BLOCK_M + (k_len - q_len)  # the block's first and last rows' positions
    last = tl.minimum((start_m + 1) * BLOCK_M, q_len) - 1 + (k_len - q_len)
    # Keys some row of the block sees: [lo, hi); whole key blocks that every row sees: [full_lo, full_hi).
    # Bounds are clamped at 0 before dividing: Triton's integer division truncates toward zero, not down.
    if HAS_RIGHT_BOUND:
        hi = tl.minimum(last + window_right + 1, k_len)
        full_hi = tl.maximum(tl.minimum(first + window_right + 1, k_len), 0) // BLOCK_N * BLOCK_N
    else:
        hi = k_len
        full_hi = k_len // BLOCK_N * BLOCK_N
    if HAS_LEFT_BOUND:
        lo = tl.maximum(first - window_left, 0) // BLOCK_N * BLOCK_N
        full_lo = (tl.maximum(last - window_left, 0) + BLOCK_N - 1) // BLOCK_N * BLOCK_N
        # A window narrower than the query block: no key block is whole to every row, all of [lo, hi) is masked.
        narrow = full_lo >= full_hi
        full_lo = tl.where(narrow, lo, full_lo)
        full_hi = tl.where(narrow, lo, full_hi)
    else:
        full_lo = 0

    m_i = tl.full([BLOCK_M], _NO_SCORE, dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    if HAS_LEFT_BOUND:
        acc, m_i, l_i = _attend_blocks(
            acc, m_i, l_i, q, K_BLOCK, V_BLOCK, stride_k_tok, stride_v_tok,
            positions, offs_n, d_mask, lo, full_lo, k_len, window_left, window_right, qk_scale,
            IS_MASKED=True, HAS_LEFT_BOUND=HAS_LEFT_BOUND, HAS_RIGHT_BOUND=HAS_RIGHT_BOUND, UPCAST=UPCAST,
            DOT_PRECISION=DOT_PRECISION, BLOCK_N=BLOCK_N,
        )
    acc, m_i, l_i = _attend_blocks(
        acc, m_i, l_i, q, K_BLOCK, V_BLOCK, stride_k_tok, stride_v_tok,
        positions, offs_n, d_mask, full_lo, full_hi, k_len, window_left, window_right, qk_scale,
        IS_MASKED=False, HAS_LEFT_BOUND=HAS_LEFT_BOUND, HAS_RIGHT_BOUND=HAS_RIGHT_BOUND, UPCAST=UPCAST,
        DOT_PRECISION=DOT_PRECISION, BLOCK_N=BLOCK_N,
    )
    acc, m_i, l_i = _attend_blocks(
        acc, m_i, l_i, q, K_BLOCK, V_BLOCK, stride_k_tok, stride_v_tok,
        positions, offs_n, d_mask, full_hi, hi, k_len, window_left, window_right, qk_scale,
        IS_MASKED=True, HAS_LEFT_BOUND=HAS_LEFT_BOUND, HAS_RIGHT_BOUND=HAS_RIGHT_BOUND, UPCAST=UPCAST,
        DOT_PRECISION=DOT_PRECISION, BLOCK_N=BLOCK_N,
    )
    # Rows that see no key (only the block's padding rows, or queries before their sequence's first key when
    # q_len > k_len) have l_i = 0: they give 0, as flash-attn does, rather than 0 / 0.
    acc = acc / tl.where(l_i > 0.0, l_i, 1.0)[:, None]
    o_rows = q_start.to(tl.int64) + offs_m
    tl.store(
        OUT + o_rows[:, None] * stride_o_tok + head * stride_o_head + offs_d[None, :],
        acc.to(OUT.dtype.element_ty),
        mask=q_mask,
    )


def prune_configs(configs: list[triton.Config], named_args: dict, **kwargs) -> list[triton.Config]:
    """The configs worth compiling for a launch: every compile costs seconds of a cold start, and the large tiles
    are slow to compile and spill registers where they cannot win (fp32, which ships to tests and references
    rather than to speed; head dims of 128 and more). Keeps the smallest tile when nothing else is left."""
    head_dim = kwargs.get("HEAD_DIM", named_args.get("HEAD_DIM", 0))
    if named_args["Q"].dtype == torch.float32:
        limit = 64 * 64
    elif head_dim >= 128:
        limit = 128 * 64
    else:
        return configs
    kept = [config for config in configs if config.kwargs["BLOCK_M"] * config.kwargs["BLOCK_N"] <= limit]
    return kept or [min(configs, key=lambda config: config.kwargs["BLOCK_M"] * config.kwargs["BLOCK_N"])]


_attention_full = autotune(_FULL_CONFIGS, _INTERPRETED_CONFIG, _KEY, prune_configs)(_attention_kernel)
_attention_rows = autotune(_ROWS_CONFIGS, _INTERPRETED_CONFIG, _KEY, prune_configs)(_attention_kernel)


def varlen_attention_triton(
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
    """Launch the varlen attention kernel. Shapes as kernels.varlen_attention (checked there).

    q: [total_q, nheads, headdim]; k, v: [total_tokens, nheads_kv, headdim] with nheads a multiple of nheads_kv,
    fp16/bf16/fp32 on one device, any token/head strides; cu_seqlens, cu_seqlens_q: int32 [batch + 1];
    max_seqlen_q sizes the grid; window: (left, right), -1 for no bound. Returns [total_q, nheads, headdim] in
    q's dtype. With causal, every sequence needs len_q <= len_k.
    """
    check_kernel_dtype("varlen_attention", q.dtype)
    check_tensors("varlen_attention", q.dtype, q.device, k=k, v=v)
    check_tensors("varlen_attention", torch.int32, q.device, cu_seqlens=cu_seqlens, cu_seqlens_q=cu_seqlens_q)
    total_q, nheads, head_dim = q.shape
    nheads_kv = k.shape[1]
    if head_dim > 256:
        raise ValueError(f"varlen_attention: headdim {head_dim} exceeds the kernel's limit of 256")
    if nheads % nheads_kv or v.shape[1] != nheads_kv:
        raise ValueError(f"varlen_attention: {nheads} query heads cannot share {nheads_kv} key/value heads")
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    out = torch.empty((total_q, nheads, head_dim), dtype=q.dtype, device=q.device)
    batch = cu_seqlens.shape[0] - 1
    if total_q == 0 or batch == 0:
        return out
    left, right = window_bounds(causal, window, max_seqlen, max_seqlen_q)
    kernel = _attention_rows if max_seqlen_q <= 16 else _attention_full

    def grid(meta):
        return (triton.cdiv(max_seqlen_q, meta["BLOCK_M"]), batch, nheads)

    with on_device(q), AUTOTUNED_LAUNCH:
        kernel[grid](
            q, k, v, out, cu_seqlens_q, cu_seqlens,
            q.stride(0), q.stride(1), k.stride(0), k.stride(1),
            v.stride(0), v.stride(1), out.stride(0), out.stride(1),
            softmax_scale * LOG2_E, nheads // nheads_kv, max(left, 0), max(right, 0),
            HEAD_DIM=head_dim,
            BLOCK_D=max(16, triton.next_power_of_2(head_dim)),
            HAS_LEFT_BOUND=left >= 0,
            HAS_RIGHT_BOUND=right >= 0,
            UPCAST=upcast_bf16(q.dtype),
            # fp32 inputs would otherwise run tl.dot in TF32 on GPUs, far outside fp32 tolerance.
            DOT_PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
        )
    return out


def window_bounds(causal: bool, window: tuple[int, int], max_seqlen: int, max_seqlen_q: int) -> tuple[int, int]:
    """(left, right) key bounds around a query's position, -1 for none: causal is the right bound 0, and a
    bound that no sequence reaches is dropped, so windows wider than the batch run the unbounded kernel.

    A query sits at key position p >= len_k - len_q: a left bound >= max_seqlen hides no key (p - left < 0), nor
    does a right bound >= max_seqlen_q (p + right >= len_k - 1).
    """
    left, right = window
    if left >= max_seqlen:
        left = -1
    if causal:
        right = 0
    elif right >= max_seqlen_q:
        right = -1
    return left, right
