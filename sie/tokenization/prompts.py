"""Decoder rerankers' pairs: the query and document laid into a prompt recipe, token ids assembled here.

The recipe's static pieces are tokenized once, when the tokenizer is built; each call tokenizes only the
query and document parts, in batched calls of the Rust tokenizer, and cuts the document (never the template's
end) to fit ``max_length``.
"""

from __future__ import annotations

from collections.abc import Sequence

from tokenizers import Tokenizer

from sie.errors import InputTooLongError, UnsupportedModelError
from sie.recipes import Recipe
from sie.tokenization.encoded import EncodedPairs


class PromptTokenizer:
    """Encodes (query, document) pairs into ``recipe``'s prompt with a model's fast tokenizer.

    Attributes:
        score_token_ids: ids of the recipe's (negative, positive) score tokens.
        num_special_tokens: the template's static tokens (prefix, separator, suffix), in every pair.
        default_max_length: the recipe's length budget in total tokens.
    """

    def __init__(self, tokenizer: Tokenizer, recipe: Recipe) -> None:
        self.recipe = recipe
        self._tokenizer = Tokenizer.from_str(tokenizer.to_str())
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        self._prefix = self._ids(recipe.prefix)
        self._suffix = self._ids(recipe.suffix)
        self._separator = self._ids((recipe.separator,)) if not recipe.joint else []
        self.score_token_ids = tuple(self._single_token(token) for token in recipe.score_tokens)
        self.num_special_tokens = len(self._prefix) + len(self._separator) + len(self._suffix)
        template = len(self._prefix) + len(self._suffix)
        self.default_max_length = recipe.max_length + (0 if recipe.max_length_counts_template else template)

    def _ids(self, pieces: Sequence[str]) -> list[int]:
        return [token for piece in pieces if piece
                for token in self._tokenizer.encode(piece, add_special_tokens=False).ids]

    def _single_token(self, token: str) -> int:
        token_id = self._tokenizer.token_to_id(token)
        if token_id is None:
            ids = self._tokenizer.encode(token, add_special_tokens=False).ids
            if len(ids) != 1:
                raise UnsupportedModelError(f"recipe {self.recipe.name}: score token {token!r} is {len(ids)} tokens "
                                            "for this tokenizer; it must be one")
            token_id = ids[0]
        return token_id

    def _batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [encoding.ids for encoding in self._tokenizer.encode_batch(list(texts), add_special_tokens=False)]

    def encode(
        self, queries: Sequence[str], documents: Sequence[str], max_length: int, *, truncate: bool = True,
        instruction: str | None = None,
    ) -> EncodedPairs:
        """``queries[i]`` with ``documents[i]`` in the recipe's prompt, at most ``max_length`` tokens each.

        ``instruction`` fills the recipe's instruction slot (its default instruction when None). A pair longer
        than ``max_length`` has its document cut (and, by the recipe's rule, a long query its end), or raises
        InputTooLongError naming ``items[i]`` when ``truncate`` is False; so does a query part past the recipe's
        ``query_share``, which its reference cuts even where the pair fits.
        """
        if len(queries) != len(documents):
            raise ValueError(f"{len(queries)} queries for {len(documents)} documents")
        content = max_length - len(self._prefix) - len(self._suffix)  # the query part, separator and document part
        if self.recipe.joint:
            middles = self._joint(queries, documents, instruction)
        else:
            middles = self._separate(queries, documents, instruction, content, truncate)
        sequences = []
        for index, middle in enumerate(middles):
            if len(middle) > content:
                if not truncate:
                    raise InputTooLongError(f"items[{index}]", len(middle) + max_length - content, max_length)
                middle = middle[:content]
            sequences.append(self._prefix + middle + self._suffix)
        return EncodedPairs.from_ids(sequences)

    def _joint(self, queries: Sequence[str], documents: Sequence[str], instruction: str | None) -> list[list[int]]:
        """Query part, separator and document part as one text per pair: cutting its end cuts the document."""
        recipe = self.recipe
        return self._batch([recipe.query_text(query, instruction) + recipe.separator + recipe.document_text(document)
                            for query, document in zip(queries, documents, strict=True)])

    def _separate(
        self, queries: Sequence[str], documents: Sequence[str], instruction: str | None, content: int, truncate: bool
    ) -> list[list[int]]:
        """Query part, separator and document part, each tokenized alone (every distinct query once). The query
        part is capped at the recipe's share of the ``content`` budget, leaving the document the rest; past the cap
        it is cut, or with ``truncate`` False refused (InputTooLongError naming the first ``items[i]`` with it)."""
        recipe = self.recipe
        unique = list(dict.fromkeys(queries))
        cap = None if recipe.query_share is None else int(content * recipe.query_share)
        query_ids = dict(zip(unique, self._batch([recipe.query_text(query, instruction) for query in unique]),
                             strict=True))
        for query, ids in query_ids.items():
            if cap is not None and len(ids) > cap:
                if not truncate:
                    raise InputTooLongError(f"items[{queries.index(query)}]", len(ids), cap)
                query_ids[query] = ids[:cap]
        document_ids = self._batch([recipe.document_text(document) for document in documents])
        return [query_ids[query] + self._separator + ids for query, ids in zip(queries, document_ids, strict=True)]
