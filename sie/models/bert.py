"""BERT cross-encoder on packed variable-length batches.

Attribute names mirror the Hugging Face checkpoint keys (``bert.encoder.layer.0.attention.output.dense``),
so loading is a small rename table (``convert_checkpoint`` below). The one structural difference: query,
key and value projections are fused into ``attention.qkv`` (one matmul instead of three).
Every activation is ``(total_tokens, hidden)``; nothing is padded to ``(batch, max_len)``.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn

from sie.errors import UnsupportedModelError
from sie.kernels import Kernels
from sie.models.family import Fusion, ModelFamily, StateDict, Tensors
from sie.packing import PackedBatch
from sie.quantization import linear_features, linear_gelu


class BertEmbeddings(nn.Module):
    """Word + position + token type embeddings, then LayerNorm."""

    def __init__(self, config, kernels: Kernels) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.kernels = kernels

    def forward(self, batch: PackedBatch) -> torch.Tensor:
        """Returns ``(total_tokens, hidden)``."""
        embeddings = self.word_embeddings(batch.input_ids) + self.token_type_embeddings(batch.token_type_ids)
        return self.kernels.layer_norm(embeddings, self.LayerNorm.weight, self.LayerNorm.bias, self.LayerNorm.eps,
                                       self.position_embeddings(batch.position_ids))


class BertProjection(nn.Module):
    """Linear projection, then residual add + LayerNorm (BertSelfOutput and BertOutput in transformers)."""

    def __init__(self, in_features: int, hidden: int, eps: float, kernels: Kernels) -> None:
        super().__init__()
        self.dense = nn.Linear(in_features, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=eps)
        self.kernels = kernels

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """x: ``(rows, in_features)``, residual: ``(rows, hidden)`` -> ``(rows, hidden)``."""
        return self.kernels.layer_norm(self.dense(x), self.LayerNorm.weight, self.LayerNorm.bias, self.LayerNorm.eps,
                                       residual)


class BertAttention(nn.Module):
    """Multi-head self-attention over packed sequences, with the output projection and its LayerNorm."""

    def __init__(self, config, kernels: Kernels) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.output = BertProjection(config.hidden_size, config.hidden_size, config.layer_norm_eps, kernels)
        self.kernels = kernels

    def forward(self, x: torch.Tensor, batch: PackedBatch, cls_only: bool) -> torch.Tensor:
        """x: ``(total_tokens, hidden)`` -> ``(total_tokens, hidden)``, or ``(batch, hidden)`` when ``cls_only``.

        With ``cls_only`` the queries are the CLS rows alone while keys and values cover every token:
        the last layer's other rows feed nothing downstream.
        """
        hidden = x.shape[1]
        if cls_only:
            residual = x[batch.cls_rows]
            key_value = linear_features(self.qkv, x, slice(hidden, None))
            key, value = key_value.view(-1, 2, self.num_heads, self.head_dim).unbind(1)
            query = linear_features(self.qkv, residual, slice(None, hidden))
            query = query.view(-1, self.num_heads, self.head_dim)
            cu_seqlens_q, max_seqlen_q = batch.one_row_each, 1
        else:
            residual = x
            query, key, value = self.qkv(x).view(-1, 3, self.num_heads, self.head_dim).unbind(1)
            cu_seqlens_q, max_seqlen_q = batch.cu_seqlens, batch.max_seqlen
        context = self.kernels.attention(query, key, value, batch.cu_seqlens, batch.max_seqlen, cu_seqlens_q,
                                         max_seqlen_q, causal=False, softmax_scale=self.scale)
        return self.output(context.reshape(-1, hidden), residual)


class BertIntermediate(nn.Module):
    """The FFN's first projection with bias + exact GELU fused after the matmul."""

    def __init__(self, config, kernels: Kernels) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.kernels = kernels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(rows, hidden)`` -> ``(rows, intermediate)``."""
        return linear_gelu(self.dense, x, self.kernels)


class BertLayer(nn.Module):
    def __init__(self, config, kernels: Kernels) -> None:
        super().__init__()
        self.attention = BertAttention(config, kernels)
        self.intermediate = BertIntermediate(config, kernels)
        self.output = BertProjection(config.intermediate_size, config.hidden_size, config.layer_norm_eps, kernels)

    def forward(self, x: torch.Tensor, batch: PackedBatch, cls_only: bool = False) -> torch.Tensor:
        """``(total_tokens, hidden)`` -> same, or ``(batch, hidden)`` when ``cls_only``."""
        attended = self.attention(x, batch, cls_only)
        return self.output(self.intermediate(attended), attended)


class BertEncoder(nn.Module):
    def __init__(self, config, kernels: Kernels) -> None:
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(config, kernels) for _ in range(config.num_hidden_layers))

    def forward(self, x: torch.Tensor, batch: PackedBatch, cls_only: bool = True) -> torch.Tensor:
        """``(total_tokens, hidden)`` -> the CLS rows of the last layer, ``(batch, hidden)``, or with ``cls_only``
        False every row of it, ``(total_tokens, hidden)``."""
        *layers, last = self.layer
        for layer in layers:
            x = layer(x, batch)
        return last(x, batch, cls_only=cls_only)


class BertPooler(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, cls_hidden: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(cls_hidden))


class BertModel(nn.Module):
    def __init__(self, config, kernels: Kernels, add_pooling_layer: bool = True) -> None:
        super().__init__()
        self.embeddings = BertEmbeddings(config, kernels)
        self.encoder = BertEncoder(config, kernels)
        self.pooler = BertPooler(config) if add_pooling_layer else None

    def forward(self, batch: PackedBatch, cls_only: bool = True) -> torch.Tensor:
        """Returns the last layer's CLS rows, ``(batch, hidden)``, or every row, ``(total_tokens, hidden)``."""
        return self.encoder(self.embeddings(batch), batch, cls_only)


class BertForEmbedding(BertModel):
    """BERT's body without pooler or head, for embedding models (sentence-transformers' ``BertModel`` checkpoints):
    its attributes are the base checkpoint's keys, and ``sie.Encoder`` pools the hidden states it returns."""

    position_offset = 0
    row_pooling = "cls"

    def __init__(self, config, kernels: Kernels) -> None:
        super().__init__(config, kernels, add_pooling_layer=False)

    def forward(self, batch: PackedBatch, pooled_only: bool = False) -> torch.Tensor:
        """The last layer's hidden states, ``(total_tokens, hidden)``, or with ``pooled_only`` its CLS rows alone,
        ``(batch, hidden)`` (the last layer's queries are those rows only)."""
        return super().forward(batch, cls_only=pooled_only)


class BertForSequenceClassification(nn.Module):
    """BERT encoder, pooler (dense + tanh) and classifier: one logit per packed sequence."""

    position_offset = 0

    def __init__(self, config, kernels: Kernels) -> None:
        super().__init__()
        self.bert = BertModel(config, kernels)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, batch: PackedBatch) -> torch.Tensor:
        """Returns logits ``(batch, num_labels)``."""
        return self.classifier(self.bert.pooler(self.bert(batch)))


def fuse_qkv(tensors: Tensors) -> StateDict:
    """Renames a transformers BERT-family checkpoint to ours: ``attention.self.{query,key,value}`` ->
    ``attention.qkv``, fused as each layer's last projection arrives.

    Also accepts the old ``LayerNorm.gamma``/``beta`` names. Keys it does not know are kept, so the
    caller's strict load reports them; an attention weight other than the three projections (relative
    position embeddings, say) raises UnsupportedModelError.
    """
    renamed: StateDict = {}
    fusion = Fusion(renamed)
    for key, tensor in tensors:
        key = key.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
        prefix, marker, rest = key.partition(".attention.self.")
        if marker:
            projection, _, kind = rest.partition(".")
            fusion.add(f"{prefix}.attention.qkv.{kind}", ("query", "key", "value"), projection, tensor)
        else:
            renamed[key] = tensor
    fusion.check_complete()
    return renamed


# Buffers transformers saves with some checkpoints; sie derives both from the packed batch.
_BUFFERS = re.compile(r"(^|\.)embeddings\.(position_ids|token_type_ids)$")


def convert_checkpoint(tensors: Tensors, config: Any) -> StateDict:
    """A transformers BERT checkpoint in our keys: saved buffers dropped, query/key/value fused (``fuse_qkv``)."""
    return fuse_qkv((key, tensor) for key, tensor in tensors if not _BUFFERS.search(key))


def check_encoder_config(config: Any) -> None:
    """Raises UnsupportedModelError for a BERT-family body this module does not implement."""
    position_type = getattr(config, "position_embedding_type", "absolute")
    if position_type != "absolute":
        raise UnsupportedModelError(f"position_embedding_type {position_type!r} is not supported; sie runs 'absolute'")
    if config.hidden_act not in ("gelu", "gelu_python"):
        raise UnsupportedModelError(f"hidden_act {config.hidden_act!r} is not supported; sie runs exact (erf) 'gelu'")


def check_config(config: Any) -> None:
    """Raises UnsupportedModelError for a BERT-family cross-encoder config this module does not implement."""
    check_encoder_config(config)
    if config.num_labels != 1:
        raise UnsupportedModelError(
            f"the checkpoint has {config.num_labels} labels; sie runs cross-encoders with exactly one relevance logit"
        )


# A base checkpoint's keys may carry the prefix of the class that saved it (``bert.`` from a wrapper); its pooler
# and any pre-training head are never used by an embedding model.
_BODY_PREFIXES = ("bert.", "roberta.")
_NOT_BODY = re.compile(r"^(pooler|cls|lm_head)\.")


def convert_encoder_checkpoint(tensors: Tensors, config: Any) -> StateDict:
    """A BERT-family base checkpoint (``BertModel``, ``XLMRobertaModel``) in the keys of ``BertForEmbedding``:
    a wrapper's prefix removed, pooler and pre-training heads dropped, then ``convert_checkpoint``."""
    body = ((_without_body_prefix(key), tensor) for key, tensor in tensors)
    return convert_checkpoint(((key, tensor) for key, tensor in body if not _NOT_BODY.search(key)), config)


def _without_body_prefix(key: str) -> str:
    for prefix in _BODY_PREFIXES:
        key = key.removeprefix(prefix)
    return key


def max_length(config: Any) -> int:
    """The position table's length, at most 512: BERT cross-encoders are trained on pairs up to 512 tokens."""
    return min(config.max_position_embeddings, 512)


FAMILY = ModelFamily(
    name="bert",
    architectures=("BertForSequenceClassification",),
    module=BertForSequenceClassification,
    convert_checkpoint=convert_checkpoint,
    max_length=max_length,
    check_config=check_config,
)

# The body alone, for embedding models: sentence-transformers folders (all-MiniLM-L6-v2 and the like).
ENCODER = ModelFamily(
    name="bert-encoder",
    architectures=("BertModel",),
    module=BertForEmbedding,
    convert_checkpoint=convert_encoder_checkpoint,
    max_length=max_length,
    check_config=check_encoder_config,
    task="encode",
)
