"""Qwen3 decoders read as rerankers (Qwen3-Reranker-0.6B/4B/8B) and as embedding models' bodies
(Qwen3-Embedding-0.6B/4B/8B): Qwen2's modules with two differences.

Queries and keys are RMS-normalised per head (``q_norm``, ``k_norm``) before the rotation, and the q/k/v
projections carry a bias only when ``attention_bias`` says so (Qwen3 checkpoints have none).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from sie.kernels import Kernels
from sie.models import qwen2
from sie.models.family import ModelFamily


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


class Qwen3ForEmbedding(qwen2.Qwen2ForEmbedding):
    layer_class = Qwen3DecoderLayer


# Qwen2's families with this module: checkpoint conversion, length rule, config checks and heads are the same.
CAUSAL_LM = dataclasses.replace(qwen2.CAUSAL_LM, name="qwen3", architectures=("Qwen3ForCausalLM",),
                                module=Qwen3ForReranking)
CLASSIFIER = dataclasses.replace(qwen2.CLASSIFIER, name="qwen3-classifier",
                                 architectures=("Qwen3ForSequenceClassification",), module=Qwen3ForReranking)
# The body alone, for embedding models: Qwen3-Embedding's sentence-transformers folders name the causal LM (their
# checkpoint holds the body, with or without the ``model.`` prefix) and pool its last token. Qwen3ForCausalLM is
# then registered for both tasks; ``sie.encoder.model_task`` tells a reranker's folder from an embedding model's.
ENCODER = ModelFamily(
    name="qwen3-encoder",
    architectures=("Qwen3Model", "Qwen3ForCausalLM"),
    module=Qwen3ForEmbedding,
    convert_checkpoint=qwen2.convert_encoder_checkpoint,
    max_length=qwen2.max_length,
    check_config=qwen2.check_body_config,
    task="encode",
)
