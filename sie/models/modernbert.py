"""ModernBERT on packed variable-length batches: the reranker (gte-reranker-modernbert-base) and the embedding
body (gte-modernbert-base).

A pre-norm encoder with no token types and no position table: rotary positions restart in every packed sequence,
with one base for the global layers and another for the local ones; every ``global_attn_every_n_layers``-th layer
attends over the whole sequence and the others over a sliding window of ``local_attention // 2`` keys on each
side; the MLP is GeGLU; linears and LayerNorms carry a bias only where the config says. Attribute names mirror the
checkpoint's keys (``model.layers.0.attn.Wqkv``); a LayerNorm without bias gets a zero one at conversion, so that
every norm runs the same kernel.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sie.errors import UnsupportedModelError
from sie.kernels import Kernels
from sie.models.family import ModelFamily, StateDict, Tensors
from sie.models.pooling import mean_pool
from sie.models.rotary import RotaryEmbedding, apply_rotary
from sie.packing import PackedBatch
from sie.quantization import linear_features

GLOBAL, LOCAL = "full_attention", "sliding_attention"
# The classifier head's activations, as transformers' ACT2FN names them ("gelu" is the exact, erf one).
ACTIVATIONS = {"gelu": F.gelu, "relu": F.relu, "silu": F.silu, "tanh": torch.tanh}


def _layer_norm(x: torch.Tensor, norm: nn.LayerNorm, kernels: Kernels) -> torch.Tensor:
    return kernels.layer_norm(x, norm.weight, norm.bias, norm.eps, None)


class ModernBertEmbeddings(nn.Module):
    """Token embeddings, then LayerNorm: positions enter through the rotary attention."""

    def __init__(self, config: Any, kernels: Kernels) -> None:
        super().__init__()
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.norm_eps)
        self.kernels = kernels

    def forward(self, batch: PackedBatch) -> torch.Tensor:
        """Returns ``(total_tokens, hidden)``."""
        return _layer_norm(self.tok_embeddings(batch.input_ids), self.norm, self.kernels)


class ModernBertAttention(nn.Module):
    """Rotary multi-head self-attention over packed sequences, global or within a sliding window."""

    def __init__(self, config: Any, layer_type: str, kernels: Kernels) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scale = self.head_dim**-0.5
        half = config.local_attention // 2
        self.window = (half, half) if layer_type == LOCAL else (-1, -1)
        self.Wqkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=config.attention_bias)
        self.Wo = nn.Linear(config.hidden_size, config.hidden_size, bias=config.attention_bias)
        self.kernels = kernels

    def forward(
        self, x: torch.Tensor, batch: PackedBatch, rotary: tuple[torch.Tensor, torch.Tensor], cls_only: bool
    ) -> torch.Tensor:
        """x: the normed ``(total_tokens, hidden)`` -> ``(total_tokens, hidden)``, or ``(batch, hidden)`` for the CLS
        rows when ``cls_only`` (keys and values still cover every token; global layers only, see the model)."""
        hidden = x.shape[1]
        cos, sin = rotary
        if cls_only:
            rows = batch.cls_rows
            key_value = linear_features(self.Wqkv, x, slice(hidden, None))
            key, value = key_value.view(-1, 2, self.num_heads, self.head_dim).unbind(1)
            query = linear_features(self.Wqkv, x[rows], slice(None, hidden))
            query = apply_rotary(query.view(-1, self.num_heads, self.head_dim), cos[rows], sin[rows])
            cu_seqlens_q, max_seqlen_q = batch.one_row_each, 1
        else:
            query, key, value = self.Wqkv(x).view(-1, 3, self.num_heads, self.head_dim).unbind(1)
            query = apply_rotary(query, cos, sin)
            cu_seqlens_q, max_seqlen_q = batch.cu_seqlens, batch.max_seqlen
        key = apply_rotary(key, cos, sin)
        context = self.kernels.attention(query, key, value, batch.cu_seqlens, batch.max_seqlen, cu_seqlens_q,
                                         max_seqlen_q, causal=False, softmax_scale=self.scale, window=self.window)
        return self.Wo(context.reshape(-1, hidden))


class ModernBertMLP(nn.Module):
    """GeGLU: ``Wo(gelu(input) * gate)`` with ``Wi`` projecting to ``[input | gate]``."""

    def __init__(self, config: Any, kernels: Kernels) -> None:
        super().__init__()
        self.Wi = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=config.mlp_bias)
        self.Wo = nn.Linear(config.intermediate_size, config.hidden_size, bias=config.mlp_bias)
        self.kernels = kernels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(rows, hidden)`` -> ``(rows, hidden)``."""
        return self.Wo(self.kernels.gated_activation(self.Wi(x), "gelu"))


class ModernBertEncoderLayer(nn.Module):
    """Pre-norm block; the first layer has no attention norm (its input is the normed embeddings)."""

    def __init__(self, config: Any, index: int, kernels: Kernels) -> None:
        super().__init__()
        self.layer_type = config.layer_types[index]
        self.attn_norm = None if index == 0 else nn.LayerNorm(config.hidden_size, eps=config.norm_eps)
        self.attn = ModernBertAttention(config, self.layer_type, kernels)
        self.mlp_norm = nn.LayerNorm(config.hidden_size, eps=config.norm_eps)
        self.mlp = ModernBertMLP(config, kernels)
        self.kernels = kernels

    def forward(
        self, x: torch.Tensor, batch: PackedBatch, rotary: tuple[torch.Tensor, torch.Tensor], cls_only: bool = False
    ) -> torch.Tensor:
        """``(total_tokens, hidden)`` -> same, or ``(batch, hidden)`` for the CLS rows when ``cls_only``."""
        normed = x if self.attn_norm is None else _layer_norm(x, self.attn_norm, self.kernels)
        attended = self.attn(normed, batch, rotary, cls_only)
        x = (x[batch.cls_rows] if cls_only else x) + attended
        return x + self.mlp(_layer_norm(x, self.mlp_norm, self.kernels))


class ModernBertModel(nn.Module):
    def __init__(self, config: Any, kernels: Kernels) -> None:
        super().__init__()
        self.embeddings = ModernBertEmbeddings(config, kernels)
        self.layers = nn.ModuleList(ModernBertEncoderLayer(config, i, kernels) for i in range(config.num_hidden_layers))
        self.final_norm = nn.LayerNorm(config.hidden_size, eps=config.norm_eps)
        head_dim = config.hidden_size // config.num_attention_heads
        self.rotary = {kind: RotaryEmbedding(head_dim, config.rope_parameters[kind]["rope_theta"])
                       for kind in sorted(set(config.layer_types))}
        self.kernels = kernels

    def forward(self, batch: PackedBatch, cls_only: bool = False) -> torch.Tensor:
        """The final-norm hidden states, ``(total_tokens, hidden)``, or the CLS rows', ``(batch, hidden)``.

        The CLS rows alone run the last layer when it is global; a local last layer runs every row (its window is
        centred on each query's own position), and the CLS rows are taken after it.
        """
        x = self.embeddings(batch)
        rotary = {kind: table.cos_sin(batch.position_ids, x.dtype) for kind, table in self.rotary.items()}
        *layers, last = self.layers
        for layer in layers:
            x = layer(x, batch, rotary[layer.layer_type])
        last_cls_only = cls_only and last.layer_type == GLOBAL
        x = last(x, batch, rotary[last.layer_type], last_cls_only)
        if cls_only and not last_cls_only:
            x = x[batch.cls_rows]
        return _layer_norm(x, self.final_norm, self.kernels)


class ModernBertForEmbedding(ModernBertModel):
    """The body alone, for embedding models; ``sie.Encoder`` pools what it returns."""

    position_offset = 0
    row_pooling = "cls"

    def forward(self, batch: PackedBatch, pooled_only: bool = False) -> torch.Tensor:
        """The final-norm hidden states, ``(total_tokens, hidden)``, or with ``pooled_only`` the CLS rows alone,
        ``(batch, hidden)``."""
        return super().forward(batch, cls_only=pooled_only)


class ModernBertPredictionHead(nn.Module):
    """dense, activation, LayerNorm."""

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size, bias=config.classifier_bias)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.norm_eps)
        self.activation = ACTIVATIONS[config.classifier_activation]

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        """``(batch, hidden)`` -> ``(batch, hidden)``."""
        return F.layer_norm(self.activation(self.dense(pooled)), self.norm.normalized_shape, self.norm.weight,
                            self.norm.bias, self.norm.eps)


class ModernBertForSequenceClassification(nn.Module):
    """The encoder, CLS or mean pooling (``classifier_pooling``), the head and the classifier: one logit per
    packed sequence."""

    position_offset = 0

    def __init__(self, config: Any, kernels: Kernels) -> None:
        super().__init__()
        self.model = ModernBertModel(config, kernels)
        self.head = ModernBertPredictionHead(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.mean_pooling = config.classifier_pooling == "mean"

    def forward(self, batch: PackedBatch) -> torch.Tensor:
        """Returns logits ``(batch, num_labels)``."""
        if self.mean_pooling:
            pooled = mean_pool(self.model(batch), batch)
        else:
            pooled = self.model(batch, cls_only=True)
        return self.classifier(self.head(pooled))


def _zero_norm_biases(tensors: Tensors) -> StateDict:
    """The checkpoint, with a zero ``bias`` beside every LayerNorm weight that has none (``norm_bias: false``)."""
    state = dict(tensors)
    for key, tensor in list(state.items()):
        prefix, _, name = key.rpartition(".")
        if name == "weight" and prefix.rpartition(".")[2].endswith("norm") and f"{prefix}.bias" not in state:
            state[f"{prefix}.bias"] = torch.zeros_like(tensor)
    return state


def convert_checkpoint(tensors: Tensors, config: Any) -> StateDict:
    """A transformers ModernBERT classifier in our keys: norms without bias get zero ones."""
    return _zero_norm_biases(tensors)


def convert_encoder_checkpoint(tensors: Tensors, config: Any) -> StateDict:
    """A ModernBERT base checkpoint (``ModernBertModel``, or a wrapper's ``model.`` keys) in our keys: pre-training
    heads dropped, norms without bias given zero ones."""
    return _zero_norm_biases((key.removeprefix("model."), tensor) for key, tensor in tensors
                             if not key.startswith(("head.", "decoder.", "classifier.")))


def check_encoder_config(config: Any) -> None:
    """Raises UnsupportedModelError for a ModernBERT body this module does not implement."""
    if config.hidden_activation != "gelu":
        raise UnsupportedModelError(f"hidden_activation {config.hidden_activation!r} is not supported; sie runs "
                                    "exact (erf) 'gelu'")
    kinds = set(config.layer_types)
    if not kinds <= {GLOBAL, LOCAL}:
        raise UnsupportedModelError(f"layer_types {sorted(kinds)} are not supported; sie runs {GLOBAL} and {LOCAL}")
    for kind in kinds:
        rope_type = config.rope_parameters[kind].get("rope_type", "default")
        if rope_type != "default":
            raise UnsupportedModelError(f"{kind} rope_type {rope_type!r} is not supported; sie runs 'default'")


def check_config(config: Any) -> None:
    """Raises UnsupportedModelError for a ModernBERT classifier this module does not implement."""
    check_encoder_config(config)
    if config.classifier_activation not in ACTIVATIONS:
        raise UnsupportedModelError(f"classifier_activation {config.classifier_activation!r} is not supported; "
                                    f"sie runs {', '.join(ACTIVATIONS)}")
    if config.classifier_pooling not in ("cls", "mean"):
        raise UnsupportedModelError(f"classifier_pooling {config.classifier_pooling!r} is not supported")
    if config.num_labels != 1:
        raise UnsupportedModelError(
            f"the checkpoint has {config.num_labels} labels; sie runs cross-encoders with exactly one relevance logit"
        )


def max_length(config: Any) -> int:
    """The context the rotary positions were trained for (8192 for ModernBERT)."""
    return config.max_position_embeddings


FAMILY = ModelFamily(
    name="modernbert",
    architectures=("ModernBertForSequenceClassification",),
    module=ModernBertForSequenceClassification,
    convert_checkpoint=convert_checkpoint,
    max_length=max_length,
    check_config=check_config,
)

ENCODER = ModelFamily(
    name="modernbert-encoder",
    architectures=("ModernBertModel",),
    module=ModernBertForEmbedding,
    convert_checkpoint=convert_encoder_checkpoint,
    max_length=max_length,
    check_config=check_encoder_config,
    task="encode",
)
