"""The references sie is checked against: float64 kernels with their tolerances, and transformers' padded forward.

Shared by the tests and benchmarks/gpu_check.py (no pytest here)."""

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.utils.deterministic

# Error relative to the reference's largest magnitude, vs float64 on the same (rounded) inputs.
TOLERANCE = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}


@contextlib.contextmanager
def poisoned_uninitialized_memory() -> Iterator[None]:
    """While it lasts, torch.empty fills new memory with NaN (integers with their maximum), so an element a kernel
    fails to write cannot pass as a value left behind by an earlier run (the caching allocator hands a freed output,
    another backend's right answer, to the next one of its size)."""
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.utils.deterministic.fill_uninitialized_memory,
    )
    # fill_uninitialized_memory acts only in deterministic mode; warn_only keeps other ops running.
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.utils.deterministic.fill_uninitialized_memory = saved[2]


def relative_error(out: torch.Tensor, reference: torch.Tensor) -> float:
    """max |out - reference| / max |reference|; inf when ``out`` has an element that is not finite."""
    out64 = out.double().cpu()
    if not torch.isfinite(out64).all():
        return math.inf
    reference = reference.double().cpu()
    return (out64 - reference).abs().max().item() / reference.abs().max().item()


def packed_qkv(lengths: list[int], nheads: int, headdim: int, dtype, device, generator: torch.Generator,
               nheads_kv: int | None = None):
    """q: [total_tokens, nheads, headdim] and k, v: [total_tokens, nheads_kv (default nheads), headdim], strided
    views of one [total_tokens, nheads + 2 * nheads_kv, headdim] tensor, as the engine's fused QKV projection
    yields them; cu_seqlens: int32 [batch + 1]."""
    nheads_kv = nheads if nheads_kv is None else nheads_kv
    qkv = torch.randn(sum(lengths), nheads + 2 * nheads_kv, headdim, generator=generator).to(device=device,
                                                                                            dtype=dtype)
    cu_seqlens = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=device)
    return (*qkv.split([nheads, nheads_kv, nheads_kv], dim=1), cu_seqlens)


def reference_attention(q, k, v, cu_seqlens, cu_seqlens_q, causal: bool, scale: float,
                        window: tuple[int, int] = (-1, -1)) -> torch.Tensor:
    """float64 softmax(q k^T * scale) v per sequence, on q's device.

    q: [total_q, nheads, headdim]; k, v: [total_tokens, nheads_kv, headdim], query head h reading key/value head
    h // (nheads // nheads_kv). Query i of a sequence sits at key position p = i + len_k - len_q (bottom-right
    alignment) and sees keys p - left <= j <= p + right for window = (left, right), -1 leaving a side unbounded;
    causal bounds the right side at p. Returns [total_q, nheads, headdim] float64.
    """
    groups = q.shape[1] // k.shape[1]
    q, k, v = (t.double() for t in (q, k, v))
    k, v = (t.repeat_interleave(groups, dim=1) for t in (k, v))
    left, right = window
    bounds_k, bounds_q = cu_seqlens.tolist(), cu_seqlens_q.tolist()
    outputs = []
    for b in range(len(bounds_k) - 1):
        qb = q[bounds_q[b] : bounds_q[b + 1]]
        kb, vb = k[bounds_k[b] : bounds_k[b + 1]], v[bounds_k[b] : bounds_k[b + 1]]
        scores = torch.einsum("qhd,khd->hqk", qb, kb) * scale
        position = torch.arange(len(qb), device=q.device)[:, None] + len(kb) - len(qb)
        key = torch.arange(len(kb), device=q.device)[None, :]
        hidden = torch.zeros(len(qb), len(kb), dtype=torch.bool, device=q.device)
        if causal:
            hidden |= key > position
        if left >= 0:
            hidden |= key < position - left
        if right >= 0:
            hidden |= key > position + right
        scores = scores.masked_fill(hidden, float("-inf"))
        outputs.append(torch.einsum("hqk,khd->qhd", scores.softmax(-1), vb))
    return torch.cat(outputs)


def reference_layer_norm(x, weight, bias, eps: float, residual=None) -> torch.Tensor:
    """float64 LayerNorm(x + residual). x, residual: [total_tokens, hidden]; weight, bias: [hidden]."""
    h = x.double() + (0 if residual is None else residual.double())
    mean = h.mean(-1, keepdim=True)
    var = ((h - mean) ** 2).mean(-1, keepdim=True)
    return (h - mean) / torch.sqrt(var + eps) * weight.double() + bias.double()


def reference_bias_gelu(x, bias) -> torch.Tensor:
    """float64 exact GELU(x + bias). x: [total_tokens, n]; bias: [n]."""
    h = x.double() + bias.double()
    return 0.5 * h * (1 + torch.erf(h / math.sqrt(2)))


def reference_rms_norm(x, weight, eps: float, residual=None) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 RMSNorm(x + residual) and the sum itself. x, residual: [rows, hidden]; weight: [hidden].

    Returns (normed, summed), both [rows, hidden] float64.
    """
    h = x.double() + (0 if residual is None else residual.double())
    return h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps) * weight.double(), h


def reference_gated_activation(x, activation: str) -> torch.Tensor:
    """float64 act(gate) * up for x = [gate | up]: [rows, 2n]; "silu" or exact (erf) "gelu". Returns [rows, n]."""
    gate, up = x.double().chunk(2, dim=-1)
    if activation == "silu":
        return gate / (1 + torch.exp(-gate)) * up
    if activation == "gelu":
        return 0.5 * gate * (1 + torch.erf(gate / math.sqrt(2))) * up
    raise ValueError(f"unknown activation {activation!r}")


def padded_logits(model, tokenizer, pairs, device: torch.device, max_length: int, batch_size: int):
    """transformers' usual path, the reference sie is checked and timed against: batches of ``batch_size``
    pairs in input order, each padded to its longest pair, documents truncated (``only_second``).

    ``model`` is a transformers ``...ForSequenceClassification``; returns float32 logits, a numpy ``(len(pairs),)``.
    """
    logits = []
    with torch.inference_mode():
        for start in range(0, len(pairs), batch_size):
            queries, documents = zip(*pairs[start : start + batch_size], strict=True)
            inputs = tokenizer(list(queries), list(documents), truncation="only_second", max_length=max_length,
                               padding=True, return_tensors="pt").to(device)
            logits.append(model(**inputs).logits[:, 0].float().cpu())
    return torch.cat(logits).numpy()
