"""The module-level API: ``sie.rerank``, ``sie.score`` and ``sie.load`` over cached Rerankers."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from sie.reranker import DEFAULT_MODEL, Reranker

_loaded: dict[tuple, Reranker] = {}
_loading = threading.Lock()


def load(model: str | None = None, **kwargs: Any) -> Reranker:
    """A Reranker for ``model`` (default: cross-encoder/ms-marco-MiniLM-L-12-v2), loaded once per process.

    Keyword arguments are those of ``Reranker``; each distinct combination is loaded once and reused.
    """
    key = (model or DEFAULT_MODEL, tuple(sorted((name, str(value)) for name, value in kwargs.items())))
    loaded = _loaded.get(key)
    if loaded is not None:  # no lock: another model loading must not hold up one that is ready
        return loaded
    with _loading:
        if key not in _loaded:
            _loaded[key] = Reranker(model, **kwargs)
        return _loaded[key]


def rerank(
    query: Any, documents: Sequence[Any], model: str | None = None, *, top_k: int | None = None,
    return_documents: bool = False, raw_scores: bool = False, instruction: str | None = None,
    max_length: int | None = None,
) -> list[dict[str, Any]]:
    """Documents (strings or Items) sorted by relevance to ``query``: ``[{"index", "id", "score", "rank", "text"?}]``.

    ``score`` is sigmoid(logit) unless ``raw_scores``; ``id`` is the Item's id or ``item-<index>``.
    """
    return load(model).rerank(
        query, documents, top_k=top_k, return_documents=return_documents, raw_scores=raw_scores,
        instruction=instruction, max_length=max_length,
    )


def score(
    model: str | None, query: Any, items: Sequence[Any], *, instruction: str | None = None,
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The score API in process: ``{"model", "query_id", "scores": [{"item_id", "score", "rank"}], "usage"}``."""
    return load(model).score(query, items, instruction=instruction, options=options)
