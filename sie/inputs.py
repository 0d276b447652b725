"""Validation of what callers pass in (queries, documents or Items, options) and the score result shape.

The in-process API and the HTTP server share these rules, so a bad item fails the same way in both,
with an ``InvalidInputError`` whose ``field`` names it (``items[3].text``).
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sie.errors import InvalidInputError

SCORE_OPTIONS = ("top_k", "raw_scores", "max_length", "truncate", "profile")
# sie-sdk's options may name a model profile; sie serves each model in one, the default.
DEFAULT_PROFILE = "default"
# A Python str may hold lone UTF-16 surrogates (a JSON "\ud83d" escape, an emoji cut in half by a substring), which
# are no UTF-8 text: no tokenizer takes them.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
NOT_UTF8 = "is not valid UTF-8 text (it holds a lone surrogate)"


@dataclass(frozen=True)
class ScoreOptions:
    """Per-request options of the score API; ``max_length=None`` means the model's limit."""

    top_k: int | None = None
    raw_scores: bool = False
    max_length: int | None = None
    truncate: bool = True


@dataclass(frozen=True)
class Documents:
    """Texts to score and the ids they answer to (``item-<i>`` where the caller gave none)."""

    texts: list[str]
    ids: list[str]


def is_utf8_text(text: str) -> bool:
    """Whether ``text`` can be written as UTF-8, i.e. holds no lone surrogate."""
    return _LONE_SURROGATE.search(text) is None


def check_utf8(text: str, field: str) -> None:
    """Raises InvalidInputError naming ``field`` when ``text`` is not UTF-8 text."""
    if not is_utf8_text(text):
        raise InvalidInputError(field, NOT_UTF8)


def is_integer(value: Any) -> bool:
    """Whether ``value`` is an integer: a Python or numpy one, not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def positive_int(value: Any, field: str) -> int:
    """``value`` as an int if it is an integer >= 1 (``is_integer``), else InvalidInputError naming ``field``."""
    if not is_integer(value) or value < 1:
        raise InvalidInputError(field, f"must be a positive integer, got {value!r:.80}")
    return int(value)


def top_k_of(value: Any, field: str = "top_k") -> int | None:
    """``value`` as an int if it is a non-negative integer (``is_integer``) or None; else InvalidInputError naming
    ``field``."""
    if value is None:
        return None
    if not is_integer(value) or value < 0:
        raise InvalidInputError(field, f"must be a non-negative integer, got {value!r:.80}")
    return int(value)


def parse_bool(value: Any, field: str) -> bool:
    """``value`` if it is a bool, else InvalidInputError naming ``field``."""
    if not isinstance(value, bool):
        raise InvalidInputError(field, f"must be a boolean, got {value!r:.80}")
    return value


def check_profile(value: Any, field: str) -> None:
    """InvalidInputError naming ``field`` unless ``value`` (sie-sdk's ``options.profile``) is None or the one profile
    sie serves, ``"default"``."""
    if value is not None and value != DEFAULT_PROFILE:
        raise InvalidInputError(field, f"sie serves each model in one profile, {DEFAULT_PROFILE!r}; got {value!r:.80}")


def parse_options(options: Mapping[str, Any] | None, field: str = "options") -> ScoreOptions:
    """Checks a score request's ``options`` map; unknown keys are an error that names them."""
    if options is None:
        return ScoreOptions()
    if not isinstance(options, Mapping):
        raise InvalidInputError(field, f"must be a map, got {type(options).__name__}")
    unknown = sorted(str(key) for key in options if key not in SCORE_OPTIONS)
    if unknown:
        raise InvalidInputError(field, f"unknown option(s) {', '.join(unknown)}; supported: {', '.join(SCORE_OPTIONS)}")
    check_profile(options.get("profile"), f"{field}.profile")
    # A null option is its default, as a missing one is.
    top_k, raw_scores, max_length, truncate = (options.get(key) for key in ("top_k", "raw_scores", "max_length",
                                                                             "truncate"))
    return ScoreOptions(
        top_k=None if top_k is None else positive_int(top_k, f"{field}.top_k"),
        raw_scores=False if raw_scores is None else parse_bool(raw_scores, f"{field}.raw_scores"),
        max_length=None if max_length is None else positive_int(max_length, f"{field}.max_length"),
        truncate=True if truncate is None else parse_bool(truncate, f"{field}.truncate"),
    )


def item_text(item: Any, field: str) -> str:
    """The text of a string or of a map with a ``text``; InvalidInputError naming ``field`` (or ``field.text``)."""
    if isinstance(item, str):
        check_utf8(item, field)
        return item
    if not isinstance(item, Mapping):
        raise InvalidInputError(field, f"must be a string or an item with a text, got {type(item).__name__}")
    if "text" not in item or item["text"] is None:
        raise InvalidInputError(f"{field}.text", "is missing (only text items can be scored)")
    text = item["text"]
    if not isinstance(text, str):
        raise InvalidInputError(f"{field}.text", f"must be a string, got {type(text).__name__}")
    check_utf8(text, f"{field}.text")
    return text


def parse_text(item: Any, field: str) -> tuple[str, str | None]:
    """Returns (text, id) of a string or an Item map ``{"id"?, "text", "metadata"?, ...}``."""
    text = item_text(item, field)
    if isinstance(item, str):
        return text, None
    item_id = item.get("id")
    if item_id is not None and not isinstance(item_id, str):
        raise InvalidInputError(f"{field}.id", f"must be a string, got {type(item_id).__name__}")
    return text, item_id


def parse_query(query: Any, field: str = "query") -> tuple[str, str | None]:
    """Returns (query text, query id) of a string or an Item."""
    return parse_text(query, field)


def parse_instruction(instruction: Any) -> str | None:
    """The guide's ``instruction``: a string, or None for the model's own (a recipe's default, or none). The
    tokenizer places it: a decoder recipe's slot, or before a cross-encoder's query."""
    if instruction is not None and not isinstance(instruction, str):
        raise InvalidInputError("instruction", f"must be a string, got {type(instruction).__name__}")
    return instruction


def item_list(value: Any, field: str) -> Sequence[Any]:
    """``value`` as a list of strings or Items: a list or tuple as it is, a numpy array as a list; InvalidInputError
    naming ``field`` for anything else (a lone string is not a list of them)."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
        raise InvalidInputError(field, f"must be a list of strings or items, got {type(value).__name__}")
    return value


def parse_documents(documents: Any, field: str = "items") -> Documents:
    """Checks a list of strings or Items (``item_list``); ids default to ``item-<i>``, the item's position."""
    documents = item_list(documents, field)
    texts: list[str] = []
    ids: list[str] = []
    for index, item in enumerate(documents):
        text, item_id = parse_text(item, f"{field}[{index}]")
        texts.append(text)
        ids.append(f"item-{index}" if item_id is None else item_id)
    return Documents(texts=texts, ids=ids)


def ranking(scores: np.ndarray, top_k: int | None = None) -> np.ndarray:
    """Indices of ``scores`` (shape ``(n,)``) from most to least relevant; ties keep input order."""
    order = np.argsort(-scores, kind="stable")
    return order if top_k is None else order[:top_k]


def score_result(
    model: str, query_id: str | None, ids: list[str], scores: np.ndarray, top_k: int | None, input_tokens: int
) -> dict[str, Any]:
    """The score API's response body: every item (or the top ``top_k``) sorted by score, rank 0 first."""
    order = ranking(scores, top_k)
    return {
        "model": model,
        "query_id": query_id,
        "scores": [
            {"item_id": ids[index], "score": float(scores[index]), "rank": rank} for rank, index in enumerate(order)
        ],
        "usage": {"input_tokens": int(input_tokens)},
    }


def scores_from_logits(logits: np.ndarray, raw_scores: bool) -> np.ndarray:
    """sigmoid(logit), sentence-transformers' activation for one-logit cross-encoders, or the logits."""
    logits = np.asarray(logits, dtype=np.float64)
    return logits if raw_scores else 1.0 / (1.0 + np.exp(-logits))
