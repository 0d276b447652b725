"""What a model family registers: everything sie needs to run the checkpoints of one architecture."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sie.errors import UnsupportedModelError
from sie.kernels import Kernels

StateDict = dict[str, torch.Tensor]
# A checkpoint's (key, tensor) pairs as they are read (``sie.models.checkpoint.read_tensors``).
Tensors = Iterable[tuple[str, torch.Tensor]]


def head_dim_of(config: Any) -> int:
    """The width of one attention head: the config's ``head_dim`` where it sets one (Qwen3's is not
    ``hidden_size / num_attention_heads``), else that quotient."""
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def single_logit(logits: torch.Tensor) -> torch.Tensor:
    """The relevance of a one-label classifier: its logit. ``(batch, 1)`` -> ``(batch,)``."""
    return logits[:, 0]


@dataclass(frozen=True)
class ModelFamily:
    """One architecture family, as the registry (``sie/models/registry.py``) holds it.

    Attributes:
        name: the family's short name, e.g. ``"bert"``.
        architectures: the ``config.architectures`` names it runs, e.g. ``("BertForSequenceClassification",)``.
        module: the module class, built as ``module(config, kernels)``; its ``position_offset`` is where positions
            start in each sequence. A scoring module's ``forward(PackedBatch)`` returns ``(batch, outputs)`` logits;
            an encoding module's ``forward(PackedBatch, pooled_only)`` returns the last layer's hidden states,
            ``(total_tokens, hidden)``, or with ``pooled_only`` ``(batch, hidden)``: the one row per sequence that
            the pooling mode it names as ``row_pooling`` reads (``"cls"``, the first; ``"lasttoken"``, the last),
            computed alone in the last layer.
        convert_checkpoint: (a transformers checkpoint's ``Tensors``, config) -> the module's state dict (renames,
            fused projections; entries sie never uses dropped). Keys it does not know are kept, so the strict load
            names them. It keeps what it needs as the tensors arrive (fusing a group as soon as its last part
            does, ``Fusion``), so that loading never holds the checkpoint twice.
        max_length: ``config`` -> the longest sequence the model can read.
        check_config: raises ``UnsupportedModelError`` for a config the module does not implement.
        relevance: the scoring head's last step, ``(batch, outputs)`` logits -> ``(batch,)`` relevance logits.
        prompted: a decoder read through a prompt recipe (``sie.recipes``); the engine sets
            ``config.score_token_ids`` from the recipe before the module is built.
        task: ``"score"`` (a reranker, run by ``sie.Reranker``) or ``"encode"`` (an embedding model's body without
            any head, run by ``sie.Encoder``, which pools its hidden states).
    """

    name: str
    architectures: tuple[str, ...]
    module: Callable[[Any, Kernels], nn.Module]
    convert_checkpoint: Callable[[Tensors, Any], StateDict]
    max_length: Callable[[Any], int]
    check_config: Callable[[Any], None]
    relevance: Callable[[torch.Tensor], torch.Tensor] = single_logit
    prompted: bool = False
    task: str = "score"


class Fusion:
    """Concatenates projections a checkpoint stores apart (query, key and value, say) into the module's one fused
    tensor, in ``into``, as soon as the last of them arrives: a converter that streams a checkpoint then holds only
    the parts of groups still incomplete beside its output."""

    def __init__(self, into: StateDict) -> None:
        self.into = into
        self._pending: dict[str, tuple[tuple[str, ...], dict[str, torch.Tensor]]] = {}

    def add(self, key: str, order: tuple[str, ...], part: str, tensor: torch.Tensor) -> None:
        """Keeps ``tensor`` as ``part`` of the fused ``key``, whose parts are concatenated along dim 0 in ``order``.
        A part not in ``order`` (a relative position embedding beside the attention projections, say) raises
        UnsupportedModelError."""
        if part not in order:
            raise UnsupportedModelError(f"{key}: expected {', '.join(order)}, got {part}")
        parts = self._pending.setdefault(key, (order, {}))[1]
        parts[part] = tensor
        if len(parts) == len(order):
            del self._pending[key]
            self.into[key] = torch.cat([parts[name] for name in order])

    def check_complete(self) -> None:
        """Raises UnsupportedModelError naming a fused key some of whose parts never arrived."""
        if self._pending:
            key, (order, parts) = next(iter(self._pending.items()))
            raise UnsupportedModelError(f"{key}: expected {', '.join(order)}, got {', '.join(sorted(parts))}")
