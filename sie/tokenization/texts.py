"""Single texts for embedding models: one batched call of the Rust fast tokenizer, no padding, each text cut to the
limit (as sentence-transformers' ``max_seq_length`` cuts it) or refused."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tokenizers import Tokenizer
from tokenizers.normalizers import Lowercase
from tokenizers.normalizers import Sequence as NormalizerSequence

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

    def __init__(self, tokenizer: Tokenizer, lowercase: bool = False) -> None:
        """``lowercase``: sentence-transformers' ``do_lower_case``, applied as it applies it (``lowercasing``)."""
        self._variants = TokenizerVariants(lowercasing(tokenizer) if lowercase else tokenizer)
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


def lowercasing(tokenizer: Tokenizer) -> Tokenizer:
    """A copy of ``tokenizer`` that lower-cases texts first, as sentence-transformers applies ``do_lower_case``: a
    Lowercase normalizer ahead of the tokenizer's own, unless one is there. Special tokens are matched before any
    normalizer runs, so a literal ``[SEP]`` in a text stays one token; lower-casing the text would cut it into
    word pieces."""
    copy = Tokenizer.from_str(tokenizer.to_str())
    normalizer = copy.normalizer
    if isinstance(normalizer, Lowercase) or (isinstance(normalizer, NormalizerSequence)
                                             and any(isinstance(part, Lowercase) for part in normalizer)):
        return copy
    if isinstance(normalizer, NormalizerSequence):
        parts = list(normalizer)
    else:
        parts = [] if normalizer is None else [normalizer]
    copy.normalizer = NormalizerSequence([Lowercase(), *parts])
    return copy
