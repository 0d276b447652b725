"""Configured copies of a model's fast tokenizer, one per truncation setting, shared by concurrent threads."""

from __future__ import annotations

import threading
from collections import OrderedDict

from tokenizers import Tokenizer

# (max_length, strategy) to cut at, or None not to cut.
Truncation = tuple[int, str] | None


class TokenizerVariants:
    """Copies of one fast tokenizer, each cutting at its own truncation setting.

    A copy is made once and never changed afterwards, so that request threads can encode with different limits at
    the same time. Clients choose the limits (``options.max_length``) and each copy holds the whole vocabulary (~6 MB
    for MiniLM's), so only the ``capacity`` most recently used copies are kept: a thread still encoding with an
    evicted one keeps its own reference.
    """

    def __init__(self, tokenizer: Tokenizer, capacity: int = 8) -> None:
        self._source = tokenizer.to_str()
        self._capacity = capacity
        self._copies: OrderedDict[Truncation, Tokenizer] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._copies)

    def get(self, truncation: Truncation) -> Tokenizer:
        """The copy cutting at ``truncation`` (never padding)."""
        with self._lock:
            tokenizer = self._copies.pop(truncation, None)
            if tokenizer is None:
                tokenizer = Tokenizer.from_str(self._source)
                tokenizer.no_padding()
                if truncation is None:
                    tokenizer.no_truncation()
                else:
                    max_length, strategy = truncation
                    tokenizer.enable_truncation(max_length, strategy=strategy)
            self._copies[truncation] = tokenizer
            while len(self._copies) > self._capacity:
                self._copies.popitem(last=False)
        return tokenizer
