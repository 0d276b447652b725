"""Qwen2 decoders read as rerankers (mxbai-rerank-base/large-v2), on packed variable-length batches, and the
decoder body that Qwen3's embedding models (``sie.models.qwen3``) build on.

One causal forward, no KV cache: every layer but the last runs on all ``(total_tokens, hidden)`` rows; for a
reranker the last computes queries, attention output and MLP for the last token of each sequence only (keys and
values still cover every token), the final norm runs on those rows, and the score reads two rows of the output
embedding (the recipe's score tokens) or the checkpoint's one-label ``score`` head: never a ``(tokens, vocab)``
tensor. An embedding model's body has no vocabulary projection at all; it runs the last layer on the last rows
alone, as the reranker does, when only its last-token pooling is asked for, else on every row.

Attribute names mirror the checkpoint keys (``model.layers.0.self_attn.o_proj``) with two fusions:
``q_proj``/``k_proj``/``v_proj`` -> ``qkv_proj`` and ``gate_proj``/``up_proj`` -> ``gate_up_proj``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from sie.errors import UnsupportedModelError
from sie.kernels import Kernels
from sie.models.family import Fusion, ModelFamily, StateDict, Tensors, head_dim_of, single_logit
from sie.models.rotary import RotaryEmbedding, apply_rotary
from sie.packing import PackedBatch


def rope_theta_of(config: Any) -> float:
    parameters = getattr(config, "rope_parameters", None) or {}
    return float(parameters.get("rope_theta", getattr(config, "rope_theta", 10000.0)))


class RMSNorm(nn.Module):
    """Holds the weight and epsilon of one RMSNorm; the fused kernel applies it."""

    def __init__(self, hidden: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden))
        self.eps = eps


class Qwen2Attention(nn.Module):
    """Grouped-query causal self-attention over packed sequences, rotary positions, fused q/k/v projection.

    Qwen2 has biases on the q/k/v projections and none on the output projection.
    """

    def __init__(self, config: Any, kernels: Kernels, qkv_bias: bool = True, output_bias: bool = False) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = head_dim_of(config)
        self.scale = self.head_dim**-0.5
        q_size, kv_size = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        self.split = (q_size, kv_size, kv_size)
        self.qkv_proj = nn.Linear(config.hidden_size, q_size + 2 * kv_size, bias=qkv_bias)
        self.o_proj = nn.Linear(q_size, config.hidden_size, bias=output_bias)
        self.kernels = kernels

    def normalize_qk(self, query: torch.Tensor, key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Qwen2 uses queries and keys as projected; Qwen3 RMS-normalises them per head here."""
        return query, key

    def forward(
        self, x: torch.Tensor, batch: PackedBatch, rotary: tuple[torch.Tensor, torch.Tensor], last_only: bool
    ) -> torch.Tensor:
        """x: ``(total_tokens, hidden)`` -> ``(total_tokens, hidden)``, or ``(batch, hidden)`` when ``last_only``.

        With ``last_only`` the queries are each sequence's last row: with causal attention that row sees its
        whole sequence, so it attends every key, unmasked.
        """
        query, key, value = self.qkv_proj(x).split(self.split, dim=-1)
        query = query.view(-1, self.num_heads, self.head_dim)
        key = key.view(-1, self.num_kv_heads, self.head_dim)
        value = value.view(-1, self.num_kv_heads, self.head_dim)
        query, key = self.normalize_qk(query, key)
        cos, sin = rotary
        key = apply_rotary(key, cos, sin)
        if last_only:
            rows = batch.last_rows
            query = apply_rotary(query[rows], cos[rows], sin[rows])
            context = self.kernels.attention(query, key, value, batch.cu_seqlens, batch.max_seqlen,
                                             batch.one_row_each, 1, causal=False, softmax_scale=self.scale)
        else:
            query = apply_rotary(query, cos, sin)
            context = self.kernels.attention(query, key, value, batch.cu_seqlens, batch.max_seqlen,
                                             batch.cu_seqlens, batch.max_seqlen, causal=True,
                                             softmax_scale=self.scale)
        return self.o_proj(context.reshape(context.shape[0], -1))


class Qwen2MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x)), gate and up in one matmul."""

    def __init__(self, config: Any, kernels: Kernels) -> None:
        super().__init__()
        self.gate_up_proj = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)
        self.kernels = kernels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(rows, hidden)`` -> ``(rows, hidden)``."""
        return self.down_proj(self.kernels.gated_activation(self.gate_up_proj(x), "silu"))


class Qwen2DecoderLayer(nn.Module):
    attention_class = Qwen2Attention

    def __init__(self, config: Any, kernels: Kernels) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = self.attention_class(config, kernels)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = Qwen2MLP(config, kernels)
        self.kernels = kernels

    def forward(
        self, x: torch.Tensor, residual: torch.Tensor | None, batch: PackedBatch,
        rotary: tuple[torch.Tensor, torch.Tensor], last_only: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Pre-norm block on the residual stream, which travels beside the block's output: returns (output,
        residual) with ``output + residual`` the layer's hidden state, ``(rows, hidden)`` each (``batch`` rows
        when ``last_only``). Each norm adds the pending output to the stream in the same pass."""
        normed, residual = self.kernels.rms_norm(x, self.input_layernorm.weight, self.input_layernorm.eps, residual)
        attended = self.self_attn(normed, batch, rotary, last_only)
        if last_only:
            residual = residual[batch.last_rows]
        normed, residual = self.kernels.rms_norm(attended, self.post_attention_layernorm.weight,
                                                 self.post_attention_layernorm.eps, residual)
        return self.mlp(normed), residual


class Qwen2Model(nn.Module):
    layer_class = Qwen2DecoderLayer

    def __init__(self, config: Any, kernels: Kernels) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(self.layer_class(config, kernels) for _ in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary = RotaryEmbedding(head_dim_of(config), rope_theta_of(config))
        self.kernels = kernels

    def forward(self, batch: PackedBatch, last_only: bool = True) -> torch.Tensor:
        """The final-norm hidden state of each sequence's last token, ``(batch, hidden)``, or with ``last_only``
        False of every token, ``(total_tokens, hidden)``."""
        x = self.embed_tokens(batch.input_ids)
        rotary = self.rotary.cos_sin(batch.position_ids, x.dtype)
        residual = None
        *layers, last = self.layers
        for layer in layers:
            x, residual = layer(x, residual, batch, rotary)
        x, residual = last(x, residual, batch, rotary, last_only=last_only)
        return self.kernels.rms_norm(x, self.norm.weight, self.norm.eps, residual)[0]


class Qwen2ForEmbedding(Qwen2Model):
    """The decoder body without the vocabulary projection, for embedding models (Qwen3-Embedding's
    sentence-transformers folders): its attributes are the base model's checkpoint keys, and ``sie.Encoder`` pools
    the hidden states it returns (by the last token: with causal attention, the one row that sees the whole text)."""

    position_offset = 0
    row_pooling = "lasttoken"

    def forward(self, batch: PackedBatch, pooled_only: bool = False) -> torch.Tensor:
        """The final-norm hidden states, ``(total_tokens, hidden)``, or with ``pooled_only`` each sequence's last
        row alone, ``(batch, hidden)``: the last layer's queries, attention output, MLP and the final norm run on
        those rows (keys and values on every token)."""
        return super().forward(batch, last_only=pooled_only)


class Qwen2ForReranking(nn.Module):
    """The decoder and a score head over the last token: ``score`` holds the recipe's score-token rows of the
    output embedding (``(2, hidden)``: negative, positive) or a classifier checkpoint's own ``(1, hidden)``."""

    model_class = Qwen2Model
    position_offset = 0

    def __init__(self, config: Any, kernels: Kernels) -> None:
        super().__init__()
        self.model = self.model_class(config, kernels)
        self.score = nn.Linear(config.hidden_size, len(score_rows(config)) or config.num_labels, bias=False)

    def forward(self, batch: PackedBatch) -> torch.Tensor:
        """Returns logits ``(batch, 2)`` (negative, positive score tokens) or ``(batch, 1)``."""
        return self.score(self.model(batch))


def score_rows(config: Any) -> tuple[int, ...]:
    """The vocabulary rows a causal LM is scored with (``config.score_token_ids``, set from the recipe before the
    model is built); empty for a classifier checkpoint."""
    return tuple(getattr(config, "score_token_ids", None) or ()) if is_causal_lm(config) else ()


def is_causal_lm(config: Any) -> bool:
    return any(name.endswith("ForCausalLM") for name in getattr(config, "architectures", None) or ())


# Projections a Qwen checkpoint stores apart, and the fused tensor each becomes part of.
_FUSED = {
    **dict.fromkeys(("q_proj", "k_proj", "v_proj"), ("qkv_proj", ("q_proj", "k_proj", "v_proj"))),
    **dict.fromkeys(("gate_proj", "up_proj"), ("gate_up_proj", ("gate_proj", "up_proj"))),
}


def convert_checkpoint(tensors: Tensors, config: Any) -> StateDict:
    """A transformers Qwen checkpoint in our keys: q/k/v and gate/up fused; for a causal LM the score-token
    rows of ``lm_head`` (or of the tied input embedding) become ``score`` and the rest of the vocabulary
    projection is dropped as soon as it is read."""
    converted: StateDict = {}
    fusion = Fusion(converted)
    rows = list(score_rows(config))
    for key, tensor in tensors:
        prefix, _, name = key.rpartition(".")  # name: weight or bias
        module_prefix, _, projection = prefix.rpartition(".")
        if projection in _FUSED:
            fused, order = _FUSED[projection]
            fusion.add(f"{module_prefix}.{fused}.{name}", order, projection, tensor)
        elif key == "lm_head.weight":
            if rows:
                converted["score.weight"] = tensor[rows]
        else:
            converted[key] = tensor
    fusion.check_complete()
    tied = converted.get("model.embed_tokens.weight")
    if rows and "score.weight" not in converted and tied is not None:
        converted["score.weight"] = tied[rows]
    return converted


def convert_encoder_checkpoint(tensors: Tensors, config: Any) -> StateDict:
    """A Qwen base checkpoint in the keys of ``Qwen2ForEmbedding``: the ``model.`` prefix a causal LM saves its body
    under removed (Qwen3-Embedding's folders come with and without it), the vocabulary projection ``lm_head``
    dropped, q/k/v and gate/up fused."""
    body = ((key.removeprefix("model."), tensor) for key, tensor in tensors if key != "lm_head.weight")
    return convert_checkpoint(body, config)


def check_body_config(config: Any) -> None:
    """Raises UnsupportedModelError for a Qwen decoder body this module does not implement."""
    if config.hidden_act != "silu":
        raise UnsupportedModelError(f"hidden_act {config.hidden_act!r} is not supported; sie runs 'silu'")
    rope_type = (getattr(config, "rope_parameters", None) or {}).get("rope_type", "default")
    if rope_type != "default":
        raise UnsupportedModelError(f"rope_type {rope_type!r} is not supported; sie runs 'default'")
    if getattr(config, "use_sliding_window", False):
        raise UnsupportedModelError("sliding-window attention layers are not supported")


def check_config(config: Any) -> None:
    """Raises UnsupportedModelError for a Qwen reranker config this module does not implement."""
    check_body_config(config)
    if not is_causal_lm(config) and config.num_labels != 1:
        raise UnsupportedModelError(f"the classifier has {config.num_labels} labels; sie runs exactly one")


def max_length(config: Any) -> int:
    """The context the positions were trained for."""
    return config.max_position_embeddings


def token_difference(logits: torch.Tensor) -> torch.Tensor:
    """logit(positive) - logit(negative): ``(batch, 2)`` -> ``(batch,)``."""
    return logits[:, 1] - logits[:, 0]


CAUSAL_LM = ModelFamily(
    name="qwen2",
    architectures=("Qwen2ForCausalLM",),
    module=Qwen2ForReranking,
    convert_checkpoint=convert_checkpoint,
    max_length=max_length,
    check_config=check_config,
    relevance=token_difference,
    prompted=True,
)
# The same module with the checkpoint's own one-label head (Qwen2ForSequenceClassification).
CLASSIFIER = dataclasses.replace(CAUSAL_LM, name="qwen2-classifier", architectures=("Qwen2ForSequenceClassification",),
                                 relevance=single_logit)
