"""Cross-encoder pairs: one batched call of the Rust fast tokenizer, no padding, documents truncated.

The query is kept whole and the document is cut to fit ``max_length`` (``only_second``). A query too long to leave
room falls back to ``longest_first`` for its pairs only. sentence-transformers' ``CrossEncoder`` cuts
``longest_first`` throughout: the same tokens while the query is the shorter part, but a pair whose query is longer
than what would remain of its document loses query tokens there and keeps them here, so such pairs score
differently.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from tokenizers import Encoding, Tokenizer

from sie.errors import InputTooLongError
from sie.tokenization.encoded import EncodedPairs
from sie.tokenization.variants import TokenizerVariants, Truncation


@dataclass(frozen=True)
class PairTemplate:
    """Where a tokenizer's post-processor puts its special tokens around a pair, and the token types it gives:
    ``prefix + first + middle + second + suffix`` (BERT: ``[CLS] A [SEP] B [SEP]``; XLM-R:
    ``<s> A </s></s> B </s>``). Read off the post-processor itself, so that assembling a pair from its two
    separately tokenized texts gives exactly the tokenizer's own pair encoding."""

    prefix: tuple[int, ...]
    middle: tuple[int, ...]
    suffix: tuple[int, ...]
    prefix_types: tuple[int, ...]
    middle_types: tuple[int, ...]
    suffix_types: tuple[int, ...]
    first_type: int
    second_type: int

    @property
    def num_special_tokens(self) -> int:
        return len(self.prefix) + len(self.middle) + len(self.suffix)

    @classmethod
    def of(cls, tokenizer: Tokenizer) -> PairTemplate | None:
        """The template of ``tokenizer`` (padding and truncation off), or None when its post-processor is not one
        fixed template (checked on a second, longer pair)."""
        first, second = (tokenizer.encode(text, add_special_tokens=False) for text in ("a", "b"))
        pair = tokenizer.post_process(first, second)
        # The texts' tokens in order (the special-token mask is reliable where sequence ids are not).
        rows = [i for i, special in enumerate(pair.special_tokens_mask) if not special]
        if len(rows) != len(first.ids) + len(second.ids) or not first.ids or not second.ids:
            return None
        a, b = (rows[0], rows[len(first.ids) - 1] + 1), (rows[len(first.ids)], rows[-1] + 1)
        ids, types = pair.ids, pair.type_ids
        template = cls(
            prefix=tuple(ids[:a[0]]), middle=tuple(ids[a[1]:b[0]]), suffix=tuple(ids[b[1]:]),
            prefix_types=tuple(types[:a[0]]), middle_types=tuple(types[a[1]:b[0]]), suffix_types=tuple(types[b[1]:]),
            first_type=types[a[0]], second_type=types[b[0]],
        )
        probe = [tokenizer.encode(text, add_special_tokens=False) for text in ("what is it", "a longer second text")]
        expected = tokenizer.post_process(*probe)
        ids, types = template.assemble(probe[0].ids, probe[1].ids)
        return template if (ids, types) == (expected.ids, expected.type_ids) else None

    def assemble(self, first: Sequence[int], second: Sequence[int]) -> tuple[list[int], list[int]]:
        """The ids and token types of the pair (``first``, ``second``), each given without special tokens."""
        ids = [*self.prefix, *first, *self.middle, *second, *self.suffix]
        types = [*self.prefix_types, *[self.first_type] * len(first), *self.middle_types,
                 *[self.second_type] * len(second), *self.suffix_types]
        return ids, types


class PairTokenizer:
    """Encodes (query, document) pairs with a model's fast tokenizer.

    Each distinct query is tokenized once and every document once, both without special tokens; each pair is then
    assembled from the tokenizer's own pair template (``PairTemplate``) with its document cut to fit, which gives
    exactly the tokenizer's ``only_second`` pair encoding. Tokenizers whose post-processor is not one fixed template
    encode the pairs whole instead. Each truncation setting gets its own configured copy of the tokenizer
    (``TokenizerVariants``), so that concurrent request threads can encode with different limits safely.

    ``token_types=False`` gives every token type 0, as transformers does for a tokenizer whose ``model_input_names``
    lack ``token_type_ids`` (the model then gets none and defaults them to 0) whatever its template says.
    """

    default_max_length = None  # the model's limit

    def __init__(self, tokenizer: Tokenizer, token_types: bool = True) -> None:
        self._token_types = token_types
        self._variants = TokenizerVariants(tokenizer)
        self._template = PairTemplate.of(self._variant(None))
        self.num_special_tokens = self._variant(None).num_special_tokens_to_add(is_pair=True)

    def _variant(self, truncation: Truncation) -> Tokenizer:
        return self._variants.get(truncation)

    def encode(
        self, queries: Sequence[str], documents: Sequence[str], max_length: int, *, truncate: bool = True,
        instruction: str | None = None,
    ) -> EncodedPairs:
        """Tokenizes ``queries[i]`` with ``documents[i]``; a pair longer than ``max_length`` has its document cut.

        An ``instruction`` is prepended to every query as ``"{instruction} {query}"`` (cross-encoders have no
        slot of their own for it). A query too long to leave its document a token is cut too (``longest_first``,
        for its pairs only). With ``truncate=False`` a pair that would be cut raises InputTooLongError naming
        ``items[i]``.
        """
        if instruction is not None:
            queries = [f"{instruction} {query}" for query in queries]
        if len(queries) != len(documents):
            raise ValueError(f"{len(queries)} queries for {len(documents)} documents")
        encoded = self._encode(queries, documents, max_length, truncate)
        return encoded if self._token_types else replace(encoded, token_type_ids=np.zeros_like(encoded.input_ids))

    def _encode(
        self, queries: Sequence[str], documents: Sequence[str], max_length: int, truncate: bool
    ) -> EncodedPairs:
        if self._template is None:
            return self._encode_whole(list(zip(queries, documents)), max_length, truncate)
        raw = self._variant(None)
        unique = list(dict.fromkeys(queries))
        query_ids = dict(zip(unique, (e.ids for e in raw.encode_batch(unique, add_special_tokens=False)),
                             strict=True))
        document_ids = [e.ids for e in raw.encode_batch(list(documents), add_special_tokens=False)]
        sequences: list[list[int]] = []
        types: list[list[int]] = []
        budget = max_length - self._template.num_special_tokens
        for index, (query, document) in enumerate(zip(queries, document_ids, strict=True)):
            first = query_ids[query]
            room = budget - len(first)
            if len(document) > room:
                if not truncate:
                    length = len(first) + len(document) + self._template.num_special_tokens
                    raise InputTooLongError(f"items[{index}]", length, max_length)
                if room < 1:
                    # Cut here, never by the tokenizer's own longest_first: that also builds every pairing of the
                    # two texts' overflow windows, (query/n1) x (document/n2) encodings, gigabytes for long texts.
                    keep_first, keep_second = longest_first_lengths(len(first), len(document), budget)
                    first = first[:keep_first]
                    room = keep_second
                document = document[:max(room, 0)]
            ids, type_ids = self._template.assemble(first, document)
            sequences.append(ids)
            types.append(type_ids)
        return EncodedPairs.from_ids(sequences, types)

    def _encode_whole(self, pairs: list[tuple[str, str]], max_length: int, truncate: bool) -> EncodedPairs:
        """The pairs through the tokenizer's own pair encoding: ``only_second``, or ``longest_first`` for the
        pairs whose query leaves no room."""
        if not pairs:
            return EncodedPairs.from_ids([])
        if not truncate:
            encoded = EncodedPairs.from_encodings(self._variant(None).encode_batch(pairs))
            too_long = np.flatnonzero(encoded.lengths > max_length)
            if too_long.size:
                first = int(too_long[0])
                raise InputTooLongError(f"items[{first}]", int(encoded.lengths[first]), max_length)
            return encoded
        encodings: list[Encoding | None] = [None] * len(pairs)
        queries = self._variant(None).encode_batch([query for query, _ in pairs], add_special_tokens=False)
        for strategy, wanted in (("only_second", False), ("longest_first", True)):
            # only_second must leave the document at least one token, or the tokenizer refuses the batch.
            indices = [i for i, encoding in enumerate(queries)
                       if (len(encoding.ids) + self.num_special_tokens >= max_length) == wanted]
            if indices:
                batch = self._variant((max_length, strategy)).encode_batch([pairs[i] for i in indices])
                for index, encoding in zip(indices, batch, strict=True):
                    encodings[index] = encoding
        return EncodedPairs.from_encodings(encodings)


def longest_first_lengths(first: int, second: int, budget: int) -> tuple[int, int]:
    """How many tokens of each text the tokenizers library's ``longest_first`` keeps of a pair of ``first`` and
    ``second`` tokens in ``budget`` tokens (its rule, step for step): the shorter text whole and the longer one cut
    to the rest, or both cut to about half when the shorter one takes more than half."""
    if first + second <= budget:
        return first, second
    if budget <= 0:
        return 0, 0
    shorter, longer = sorted((first, second))
    longer = shorter if shorter > budget else max(shorter, budget - shorter)
    if shorter + longer > budget:
        shorter = budget // 2
        longer = shorter + budget % 2
    return (longer, shorter) if first > second else (shorter, longer)
