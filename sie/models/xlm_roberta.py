"""XLM-RoBERTa cross-encoder (bge-reranker-base/-large/-v2-m3): BERT's encoder with two differences.

Positions start at ``padding_idx + 1`` in each packed sequence, and the classification head is
dense + tanh + out_proj on the CLS row (no pooler).
"""

from __future__ import annotations

import torch
from torch import nn

from sie.kernels import KernelBackends
from sie.models.bert import BertModel
from sie.packing import PackedBatch


class XLMRobertaClassificationHead(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.out_proj = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, cls_hidden: torch.Tensor) -> torch.Tensor:
        """``(batch, hidden)`` -> logits ``(batch, num_labels)``."""
        return self.out_proj(torch.tanh(self.dense(cls_hidden)))


class XLMRobertaForSequenceClassification(nn.Module):
    base_model_prefix = "roberta"

    def __init__(self, config, backends: KernelBackends) -> None:
        super().__init__()
        self.position_offset = config.pad_token_id + 1
        self.roberta = BertModel(config, backends, add_pooling_layer=False)
        self.classifier = XLMRobertaClassificationHead(config)

    def forward(self, batch: PackedBatch) -> torch.Tensor:
        """Returns logits ``(batch, num_labels)``."""
        return self.classifier(self.roberta(batch))
