"""bge-m3's sparse and multivector heads, read from ``sparse_linear.pt`` and ``colbert_linear.pt`` beside the model.

Both are linear layers over the last hidden states of every token (FlagEmbedding's ``BGEM3FlagModel``):

- sparse: ``relu(sparse_linear(h))``, one weight per token; an input's weight for a vocabulary id is the largest
  over the id's occurrences, special tokens (CLS, EOS, PAD, UNK) excluded, zero weights dropped;
- multivector: ``colbert_linear(h)`` for every token after CLS (the final EOS included), L2-normalised per token.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sie.errors import UnsupportedModelError, first_line

SPARSE_FILE = "sparse_linear.pt"
MULTIVECTOR_FILE = "colbert_linear.pt"


def has_m3_heads(folder: Path) -> bool:
    """Whether ``folder`` holds bge-m3's head files (either: ``M3Heads.load`` refuses one without the other)."""
    return (Path(folder) / SPARSE_FILE).is_file() or (Path(folder) / MULTIVECTOR_FILE).is_file()


def _linear(path: Path, hidden: int, out_features: int | None) -> nn.Linear:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise UnsupportedModelError(f"{path.name} holds more than tensors and is not loaded (weights_only): "
                                    f"{first_line(error)}") from None
    weight, bias = state.get("weight"), state.get("bias")
    if weight is None or weight.ndim != 2 or weight.shape[1] != hidden or (
            out_features is not None and weight.shape[0] != out_features):
        shape = None if weight is None else tuple(weight.shape)
        raise UnsupportedModelError(f"{path.name}: expected a linear layer from {hidden} features, got weight {shape}")
    layer = nn.Linear(hidden, weight.shape[0], bias=bias is not None)
    layer.load_state_dict(state, strict=True)
    return layer


class M3Heads(nn.Module):
    """bge-m3's two token-level heads; ``multivector_dim`` is the colbert layer's width."""

    def __init__(self, sparse_linear: nn.Linear, colbert_linear: nn.Linear) -> None:
        super().__init__()
        self.sparse_linear = sparse_linear
        self.colbert_linear = colbert_linear
        self.multivector_dim = colbert_linear.out_features

    @classmethod
    def load(cls, folder: Path, hidden: int, dtype: torch.dtype, device: torch.device) -> M3Heads | None:
        """The heads of ``folder`` in ``dtype`` on ``device``; None when it has neither file."""
        folder = Path(folder)
        sparse_file, multivector_file = folder / SPARSE_FILE, folder / MULTIVECTOR_FILE
        if not sparse_file.is_file() and not multivector_file.is_file():
            return None
        if not sparse_file.is_file() or not multivector_file.is_file():
            missing = SPARSE_FILE if not sparse_file.is_file() else MULTIVECTOR_FILE
            raise UnsupportedModelError(f"{folder} has one of bge-m3's heads but not {missing}")
        heads = cls(_linear(sparse_file, hidden, 1), _linear(multivector_file, hidden, None))
        return heads.to(device=device, dtype=dtype).eval()

    def token_weights(self, states: torch.Tensor) -> torch.Tensor:
        """``(rows, hidden)`` -> sparse weights, fp32 ``(rows,)``."""
        return torch.relu(self.sparse_linear(states)).float()[:, 0]

    def token_vectors(self, states: torch.Tensor) -> torch.Tensor:
        """``(rows, hidden)`` -> multivector rows before normalisation, fp32 ``(rows, multivector_dim)``."""
        return self.colbert_linear(states).float()


def sparse_vectors(
    token_ids: np.ndarray, weights: np.ndarray, lengths: np.ndarray, excluded: Iterable[int], vocab_size: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each sequence's sparse vector from its tokens' weights: (vocabulary ids int32 ascending, weights float32).

    token_ids, weights: ``(total_tokens,)`` packed sequence after sequence; lengths: ``(batch,)``. An id's weight is
    the largest over its occurrences; ids in ``excluded`` and weights that are not positive are dropped.
    """
    count = len(lengths)
    sequence = np.repeat(np.arange(count, dtype=np.int64), lengths)
    keep = (weights > 0) & ~np.isin(token_ids, np.fromiter(excluded, dtype=np.int64))
    keys, inverse = np.unique(sequence[keep] * vocab_size + token_ids[keep], return_inverse=True)
    values = np.zeros(len(keys), dtype=np.float32)
    np.maximum.at(values, inverse, weights[keep].astype(np.float32))
    bounds = np.searchsorted(keys // vocab_size, np.arange(count + 1))
    return [((keys[start:stop] % vocab_size).astype(np.int32), values[start:stop])
            for start, stop in zip(bounds[:-1], bounds[1:], strict=True)]
