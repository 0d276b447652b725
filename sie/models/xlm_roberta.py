"""XLM-RoBERTa cross-encoder (bge-reranker-base/-large/-v2-m3): BERT's encoder with two differences.

Positions start at ``padding_idx + 1`` in each packed sequence and skip padding tokens (``roberta_positions``),
and the classification head is dense + tanh + out_proj on the CLS row (no pooler).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from sie.kernels import Kernels
from sie.models import bert
from sie.models.family import ModelFamily, StateDict, Tensors
from sie.packing import PackedBatch


def roberta_positions(batch: PackedBatch, padding_idx: int) -> PackedBatch:
    """``batch`` with RoBERTa's positions, as transformers' ``create_position_ids_from_input_ids`` numbers them:
    ``padding_idx`` + the count of non-padding tokens up to and including a token in its sequence, and
    ``padding_idx`` for a padding token itself. The packer numbers every token from ``padding_idx + 1``: the same
    unless a text holds the padding token literally (``<pad>``), which then shifts every later position."""
    counted = batch.input_ids != padding_idx
    running = counted.cumsum(0)  # non-padding tokens up to each row, over the whole batch
    rows = torch.arange(running.shape[0], device=running.device)
    first = rows - (batch.position_ids - (padding_idx + 1))  # each row's sequence start, from the packed positions
    before = running[first] - counted[first].long()
    positions = torch.where(counted, running - before + padding_idx, padding_idx)
    return dataclasses.replace(batch, position_ids=positions)


class XLMRobertaClassificationHead(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.out_proj = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, cls_hidden: torch.Tensor) -> torch.Tensor:
        """``(batch, hidden)`` -> logits ``(batch, num_labels)``."""
        return self.out_proj(torch.tanh(self.dense(cls_hidden)))


class XLMRobertaForSequenceClassification(nn.Module):
    def __init__(self, config, kernels: Kernels) -> None:
        super().__init__()
        self.padding_idx = config.pad_token_id
        self.position_offset = self.padding_idx + 1
        self.roberta = bert.BertModel(config, kernels, add_pooling_layer=False)
        self.classifier = XLMRobertaClassificationHead(config)

    def forward(self, batch: PackedBatch) -> torch.Tensor:
        """Returns logits ``(batch, num_labels)``."""
        return self.classifier(self.roberta(roberta_positions(batch, self.padding_idx)))


class XLMRobertaForEmbedding(bert.BertForEmbedding):
    """The body of an XLM-RoBERTa embedding model (bge-m3, multilingual-e5): BERT's, with RoBERTa's positions."""

    def __init__(self, config, kernels: Kernels) -> None:
        super().__init__(config, kernels)
        self.padding_idx = config.pad_token_id
        self.position_offset = self.padding_idx + 1

    def forward(self, batch: PackedBatch, pooled_only: bool = False) -> torch.Tensor:
        """The last layer's hidden states, ``(total_tokens, hidden)``, or with ``pooled_only`` its CLS rows alone,
        ``(batch, hidden)``."""
        return super().forward(roberta_positions(batch, self.padding_idx), pooled_only)


def convert_checkpoint(tensors: Tensors, config: Any) -> StateDict:
    """BERT's conversion, without the pooler that XLM-R classifiers keep from pre-training but never call."""
    return bert.convert_checkpoint(((key, tensor) for key, tensor in tensors if not key.startswith("roberta.pooler.")),
                                   config)


def max_length(config: Any) -> int:
    """The position table less the ``padding_idx + 1`` positions that no token uses."""
    return config.max_position_embeddings - (config.pad_token_id + 1)


FAMILY = ModelFamily(
    name="xlm-roberta",
    architectures=("XLMRobertaForSequenceClassification", "RobertaForSequenceClassification"),
    module=XLMRobertaForSequenceClassification,
    convert_checkpoint=convert_checkpoint,
    max_length=max_length,
    check_config=bert.check_config,
)

# The body alone, for embedding models (bge-m3's dense, sparse and multivector outputs all read it).
ENCODER = ModelFamily(
    name="xlm-roberta-encoder",
    architectures=("XLMRobertaModel", "RobertaModel"),
    module=XLMRobertaForEmbedding,
    convert_checkpoint=bert.convert_encoder_checkpoint,
    max_length=max_length,
    check_config=bert.check_encoder_config,
    task="encode",
)
