"""``EncodedPairs``: token ids of many pairs laid end to end, what every tokenizer of sie produces."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from tokenizers import Encoding


@dataclass(frozen=True)
class EncodedPairs:
    """Token ids of ``num_pairs`` (query, document) pairs laid end to end, without padding.

    input_ids, token_type_ids: int64 ``(total_tokens,)``; lengths: int64 ``(num_pairs,)``.
    """

    input_ids: np.ndarray
    token_type_ids: np.ndarray
    lengths: np.ndarray

    @property
    def num_pairs(self) -> int:
        return int(self.lengths.shape[0])

    @property
    def num_tokens(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def starts(self) -> np.ndarray:
        """Offset of each pair's first token, int64 ``(num_pairs,)``."""
        return np.cumsum(self.lengths) - self.lengths

    @classmethod
    def concat(cls, parts: Sequence[EncodedPairs]) -> EncodedPairs:
        """The pairs of ``parts`` in order, as one EncodedPairs."""
        return cls(
            input_ids=np.concatenate([part.input_ids for part in parts]),
            token_type_ids=np.concatenate([part.token_type_ids for part in parts]),
            lengths=np.concatenate([part.lengths for part in parts]),
        )

    @classmethod
    def from_encodings(cls, encodings: Sequence[Encoding]) -> EncodedPairs:
        lengths = np.fromiter((len(encoding.ids) for encoding in encodings), dtype=np.int64, count=len(encodings))
        total = int(lengths.sum())
        return cls(
            input_ids=np.fromiter(itertools.chain.from_iterable(e.ids for e in encodings), np.int64, total),
            token_type_ids=np.fromiter(itertools.chain.from_iterable(e.type_ids for e in encodings), np.int64, total),
            lengths=lengths,
        )

    @classmethod
    def from_ids(cls, sequences: Sequence[Sequence[int]], types: Sequence[Sequence[int]] | None = None) -> EncodedPairs:
        """Pairs given as one id list each, with their token types (all 0 when None: decoders have none)."""
        lengths = np.fromiter((len(ids) for ids in sequences), dtype=np.int64, count=len(sequences))
        total = int(lengths.sum())
        input_ids = np.fromiter(itertools.chain.from_iterable(sequences), np.int64, total)
        token_type_ids = (np.zeros_like(input_ids) if types is None
                          else np.fromiter(itertools.chain.from_iterable(types), np.int64, total))
        return cls(input_ids=input_ids, token_type_ids=token_type_ids, lengths=lengths)
