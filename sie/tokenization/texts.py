"""Single texts for embedding models: one batched call of the Rust fast tokenizer, no padding, each text cut to the
limit (as sentence-transformers' ``max_seq_length`` cuts it) or refused."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tokenizers import Tokenizer

from sie.errors import InputTooLongError
from sie.tokenization.encoded import EncodedPairs
from sie.tokenization.pairs import PairTokenizer


class TextTokenizer(PairTokenizer):
    """Encodes single texts with a model's fast tokenizer and its single-sequence template (``[CLS] $A [SEP]``).

    It keeps PairTokenizer's one configured copy of the tokenizer per truncation setting, made once and never changed,
    so that concurrent request threads can encode with different limits. The result is an ``EncodedPairs`` whose
    "pairs" are the texts: the packed-ids contract every model, batcher and packing function reads.
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        super().__init__(tokenizer)
        self.num_special_tokens = self._variant(None).num_special_tokens_to_add(is_pair=False)

    def encode_texts(self, texts: Sequence[str], max_length: int, *, truncate: bool = True,
                     field: str = "items") -> EncodedPairs:
        """Tokenizes each of ``texts``, cutting its end past ``max_length`` tokens (special tokens included); with
        ``truncate=False`` a longer text raises InputTooLongError naming ``{field}[i]``."""
        if not texts:
            empty = np.zeros(0, dtype=np.int64)
            return EncodedPairs(empty, empty, empty)
        if truncate:
            return EncodedPairs.from_encodings(self._variant((max_length, "longest_first")).encode_batch(list(texts)))
        encoded = EncodedPairs.from_encodings(self._variant(None).encode_batch(list(texts)))
        too_long = np.flatnonzero(encoded.lengths > max_length)
        if too_long.size:
            first = int(too_long[0])
            raise InputTooLongError(f"{field}[{first}]", int(encoded.lengths[first]), max_length)
        return encoded
