"""Turning (query, document) pairs into token ids without padding.

``PairTokenizer`` encodes cross-encoder pairs with the tokenizer's own pair template; ``PromptTokenizer`` lays
them into a decoder reranker's prompt recipe (``sie.recipes``). Both return ``EncodedPairs``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from sie.tokenization.encoded import EncodedPairs
from sie.tokenization.pairs import PairTokenizer
from sie.tokenization.prompts import PromptTokenizer


class PairEncoder(Protocol):
    """What the engine asks of a tokenizer."""

    #: Tokens every pair carries besides its texts: a ``max_length`` must exceed it.
    num_special_tokens: int
    #: The length budget the tokenizer's rules come with (a recipe's), or None: the model's limit.
    default_max_length: int | None

    def encode(
        self, queries: Sequence[str], documents: Sequence[str], max_length: int, *, truncate: bool = True,
        instruction: str | None = None,
    ) -> EncodedPairs:
        """``queries[i]`` with ``documents[i]``, at most ``max_length`` tokens each (the document is cut), or
        InputTooLongError naming ``items[i]`` when ``truncate`` is False and a pair is longer."""


__all__ = ["EncodedPairs", "PairEncoder", "PairTokenizer", "PromptTokenizer"]
