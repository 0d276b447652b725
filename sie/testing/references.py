"""The references sie is checked against: float64 kernels with their tolerances, and transformers' padded forward.

Shared by the tests and benchmarks/gpu_check.py (no pytest here)."""

import math

import torch

# Error relative to the reference's largest magnitude, vs float64 on the same (rounded) inputs.
TOLERANCE = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}


def relative_error(out: torch.Tensor, reference: torch.Tensor) -> float:
    """max |out - reference| / max |reference|; inf when ``out`` has an element that is not finite."""
    out64 = out.double().cpu()
    if not torch.isfinite(out64).all():
        return math.inf
    reference = reference.double().cpu()
    return (out64 - reference).abs().max().item() / reference.abs().max().item()


def packed_qkv(lengths: list[int], nheads: int, headdim: int, dtype, device, generator: torch.Generator):
    """q, k, v: [total_tokens, nheads, headdim] strided views of one [total_tokens, 3, nheads, headdim] tensor, as
    the engine's fused QKV projection yields them; cu_seqlens: int32 [batch + 1]."""
    qkv = torch.randn(sum(lengths), 3, nheads, headdim, generator=generator).to(device=device, dtype=dtype)
    cu_seqlens = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=device)
    return (*qkv.unbind(1), cu_seqlens)


def reference_attention(q, k, v, cu_seqlens, cu_seqlens_q, causal: bool, scale: float) -> torch.Tensor:
    """float64 softmax(q k^T * scale) v per sequence, on q's device; causal aligns to the bottom right.

    Returns [total_q, nheads, headdim] float64.
    """
    q, k, v = (t.double() for t in (q, k, v))
    bounds_k, bounds_q = cu_seqlens.tolist(), cu_seqlens_q.tolist()
    outputs = []
    for b in range(len(bounds_k) - 1):
        qb = q[bounds_q[b] : bounds_q[b + 1]]
        kb, vb = k[bounds_k[b] : bounds_k[b + 1]], v[bounds_k[b] : bounds_k[b + 1]]
        scores = torch.einsum("qhd,khd->hqk", qb, kb) * scale
        if causal:
            last_visible = torch.arange(len(qb), device=q.device)[:, None] + len(kb) - len(qb)
            hidden = torch.arange(len(kb), device=q.device)[None, :] > last_visible
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
                               padding=True, return_tensors="pt", return_token_type_ids=True).to(device)
            logits.append(model(**inputs).logits[:, 0].float().cpu())
    return torch.cat(logits).numpy()
