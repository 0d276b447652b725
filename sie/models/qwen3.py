"""Qwen3 decoders read as rerankers (Qwen3-Reranker-0.6B/4B/8B): Qwen2's module with two differences.

Queries and keys are RMS-normalised per head (``q_norm``, ``k_norm``) before the rotation, and the q/k/v
projections carry a bias only when ``attention_bias`` says so (Qwen3 checkpoints have none).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from sie.kernels import Kernels
from sie.models import qwen2


class Qwen3Attention(qwen2.Qwen2Attention):
    def __init__(self, config: Any, kernels: Kernels) -> None:
        bias = bool(getattr(config, "attention_bias", False))
        super().__init__(config, kernels, qkv_bias=bias, output_bias=bias)
        self.q_norm = qwen2.RMSNorm(self.head_dim, config.rms_norm_eps)
        self.k_norm = qwen2.RMSNorm(self.head_dim, config.rms_norm_eps)

    def normalize_qk(self, query: torch.Tensor, key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """RMSNorm over each head's ``headdim``: ``(rows, heads, headdim)`` in and out."""
        normed = []
        for x, norm in ((query, self.q_norm), (key, self.k_norm)):
            rows, heads, head_dim = x.shape
            flat = self.kernels.rms_norm(x.reshape(rows * heads, head_dim), norm.weight, norm.eps, None)[0]
            normed.append(flat.view(rows, heads, head_dim))
        return normed[0], normed[1]


class Qwen3DecoderLayer(qwen2.Qwen2DecoderLayer):
    attention_class = Qwen3Attention


class Qwen3Model(qwen2.Qwen2Model):
    layer_class = Qwen3DecoderLayer


class Qwen3ForReranking(qwen2.Qwen2ForReranking):
    model_class = Qwen3Model


# Qwen2's families with this module: checkpoint conversion, length rule, config checks and heads are the same.
CAUSAL_LM = dataclasses.replace(qwen2.CAUSAL_LM, name="qwen3", architectures=("Qwen3ForCausalLM",),
                                module=Qwen3ForReranking)
CLASSIFIER = dataclasses.replace(qwen2.CLASSIFIER, name="qwen3-classifier",
                                 architectures=("Qwen3ForSequenceClassification",), module=Qwen3ForReranking)
