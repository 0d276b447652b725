"""Cross-encoder pairs: one batched call of the Rust fast tokenizer, no padding, documents truncated.

The query is kept whole and the document is cut to fit ``max_length`` (``only_second``), as
sentence-transformers users expect from a reranker. A query too long to leave room falls back to
``longest_first`` for its pairs only.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
from tokenizers import Encoding, Tokenizer

from sie.errors import InputTooLongError
from sie.tokenization.encoded import EncodedPairs


class PairTokenizer:
    """Encodes (query, document) pairs with a model's fast tokenizer.

    Each truncation setting gets its own configured copy of the tokenizer, made once and never changed
    afterwards, so that concurrent request threads can encode with different limits safely.
    """

    default_max_length = None  # the model's limit

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._source = tokenizer.to_str()
        self._variants: dict[tuple[int, str] | None, Tokenizer] = {}
        self._lock = threading.Lock()
        self.num_special_tokens = self._variant(None).num_special_tokens_to_add(is_pair=True)

    def _variant(self, truncation: tuple[int, str] | None) -> Tokenizer:
        with self._lock:
            tokenizer = self._variants.get(truncation)
            if tokenizer is None:
                tokenizer = Tokenizer.from_str(self._source)
                tokenizer.no_padding()
                if truncation is None:
                    tokenizer.no_truncation()
                else:
                    max_length, strategy = truncation
                    tokenizer.enable_truncation(max_length, strategy=strategy)
                self._variants[truncation] = tokenizer
        return tokenizer

    def encode(
        self, queries: Sequence[str], documents: Sequence[str], max_length: int, *, truncate: bool = True,
        instruction: str | None = None,
    ) -> EncodedPairs:
        """Tokenizes ``queries[i]`` with ``documents[i]``; a pair longer than ``max_length`` has its document cut.

        An ``instruction`` is prepended to every query as ``"{instruction} {query}"`` (cross-encoders have no
        slot of their own for it). With ``truncate=False`` a pair that would be cut raises InputTooLongError
        naming ``items[i]``.
        """
        if instruction is not None:
            queries = [f"{instruction} {query}" for query in queries]
        pairs = list(zip(queries, documents, strict=True))
        if not pairs:
            empty = np.zeros(0, dtype=np.int64)
            return EncodedPairs(empty, empty, empty)
        if not truncate:
            encoded = EncodedPairs.from_encodings(self._variant(None).encode_batch(pairs))
            too_long = np.flatnonzero(encoded.lengths > max_length)
            if too_long.size:
                first = int(too_long[0])
                raise InputTooLongError(f"items[{first}]", int(encoded.lengths[first]), max_length)
            return encoded

        unique_queries = list(dict.fromkeys(queries))
        query_lengths = self._variant(None).encode_batch(unique_queries, add_special_tokens=False)
        too_long_queries = {
            query for query, encoding in zip(unique_queries, query_lengths, strict=True)
            # only_second must leave the document at least one token, or the tokenizer refuses the batch.
            if len(encoding.ids) + self.num_special_tokens >= max_length
        }
        if not too_long_queries:
            return EncodedPairs.from_encodings(self._variant((max_length, "only_second")).encode_batch(pairs))
        encodings: list[Encoding | None] = [None] * len(pairs)
        for strategy, wanted in (("only_second", False), ("longest_first", True)):
            indices = [i for i, query in enumerate(queries) if (query in too_long_queries) == wanted]
            if indices:
                batch = self._variant((max_length, strategy)).encode_batch([pairs[i] for i in indices])
                for index, encoding in zip(indices, batch, strict=True):
                    encodings[index] = encoding
        return EncodedPairs.from_encodings(encodings)
