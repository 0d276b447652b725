"""The module-level API: ``sie.rerank``, ``sie.score`` and ``sie.load`` over cached Rerankers; ``sie.encode`` and
``sie.load_encoder`` over cached Encoders."""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from sie.dtypes import resolve_dtype
from sie.encoder import Encoder
from sie.reranker import DEFAULT_MODEL, Reranker

_loaded: dict[tuple, Reranker] = {}
_encoders: dict[tuple, Encoder] = {}
_loading = threading.Lock()


def _cache_key(model: str | os.PathLike[str], kwargs: Mapping[str, Any]) -> tuple:
    """One key per model as loaded: a path and its string, a dtype and its name, are one (two copies otherwise)."""
    if kwargs.get("dtype") is not None:
        kwargs = {**kwargs, "dtype": resolve_dtype(kwargs["dtype"])}
    return (os.fspath(model), tuple(sorted((name, str(value)) for name, value in kwargs.items())))


def load(model: str | None = None, **kwargs: Any) -> Reranker:
    """A Reranker for ``model`` (default: cross-encoder/ms-marco-MiniLM-L-12-v2), loaded once per process.

    Keyword arguments are those of ``Reranker``; each distinct combination is loaded once and reused.
    """
    model = model or DEFAULT_MODEL  # a blank name too, in the key and in the load alike
    key = _cache_key(model, kwargs)
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


def load_encoder(model: str, **kwargs: Any) -> Encoder:
    """An Encoder for ``model``, loaded once per process (per distinct combination of ``Encoder``'s keywords)."""
    key = _cache_key(model, kwargs)
    loaded = _encoders.get(key)
    if loaded is not None:
        return loaded
    with _loading:
        if key not in _encoders:
            _encoders[key] = Encoder(model, **kwargs)
        return _encoders[key]


def encode(
    model: str, items: Any, *, output_types: Sequence[str] = ("dense",), is_query: bool | None = None,
    instruction: str | None = None, output_dtype: str | None = None, options: dict[str, Any] | None = None,
) -> dict[str, Any] | list[dict[str, Any]]:
    """The encode API in process, as sie-sdk's ``client.encode``: one item (a string or an Item ``{"id"?, "text"}``)
    gives one result, a list gives a list: ``{"id"?, "dense"?, "sparse"?: {"indices", "values"}, "multivector"?}``
    with numpy arrays. ``output_types`` are ``dense``, ``sparse``, ``multivector``; ``output_dtype`` one of
    ``float32``, ``float16``, ``int8``, ``uint8``, ``binary``, ``ubinary``; ``options``: ``max_length``, ``truncate``,
    ``normalize``.
    """
    single = isinstance(items, (str, Mapping))
    results = load_encoder(model).embed([items] if single else items, output_types=output_types, is_query=is_query,
                                        instruction=instruction, output_dtype=output_dtype, options=options)
    return results[0] if single else results
