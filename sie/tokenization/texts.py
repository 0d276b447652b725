"""Single texts for embedding models: one batched call of the Rust fast tokenizer, no padding, each text cut to the
limit (as sentence-transformers' ``max_seq_length`` cuts it) or refused."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tokenizers import Tokenizer

from sie.errors import InputTooLongError
from sie.tokenization.encoded import EncodedPairs
from sie.tokenization.variants import TokenizerVariants


class TextTokenizer:
    """Encodes single texts with a model's fast tokenizer and its single-sequence template (``[CLS] $A [SEP]``).

    Each limit gets its own configured copy of the tokenizer, made once and never changed afterwards, so that
    concurrent request threads can encode with different limits. The result is an ``EncodedPairs`` whose "pairs"
    are the texts: the packed-ids contract every model, batcher and packing function reads.
    """

    default_max_length = None  # the model's limit

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._variants = TokenizerVariants(tokenizer)
        self.num_special_tokens = self._variant(None).num_special_tokens_to_add(is_pair=False)

    def _variant(self, max_length: int | None) -> Tokenizer:
        """The tokenizer cutting texts at ``max_length`` tokens (None: not cutting)."""
        return self._variants.get(None if max_length is None else (max_length, "longest_first"))

    def encode_texts(self, texts: Sequence[str], max_length: int, *, truncate: bool = True,
                     field: str = "items") -> EncodedPairs:
        """Tokenizes each of ``texts``, cutting its end past ``max_length`` tokens (special tokens included); with
        ``truncate=False`` a longer text raises InputTooLongError naming ``{field}[i]``."""
        if not texts:
            empty = np.zeros(0, dtype=np.int64)
            return EncodedPairs(empty, empty, empty)
        encoded = EncodedPairs.from_encodings(self._variant(max_length if truncate else None).encode_batch(list(texts)))
        if not truncate:
            too_long = np.flatnonzero(encoded.lengths > max_length)
            if too_long.size:
                first = int(too_long[0])
                raise InputTooLongError(f"{field}[{first}]", int(encoded.lengths[first]), max_length)
        return encoded
