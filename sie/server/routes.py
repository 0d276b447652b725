"""The scoring endpoints: sie's ``/v1/score/{model}`` and the Cohere/Jina and text-embeddings-inference
rerank shapes, and the path they share: tokenize, wait in the model's batcher, turn logits into scores.

Everything a request can get wrong is checked here, before any work is queued; the error table in
``errors.py`` turns each exception into its status and code.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any

import numpy as np
from flask import Blueprint, Response, g, request

from sie.errors import InputTooLongError, InvalidInputError
from sie.inputs import (
    ScoreOptions,
    item_list,
    item_text,
    parse_documents,
    parse_options,
    parse_instruction,
    parse_query,
    ranking,
    score_result,
    scores_from_logits,
)
from sie.server.connection import client_gone_check
from sie.server.errors import TooManyItemsError
from sie.server.state import state
from sie.server.wire import (
    check_content_encoding,
    check_encodable,
    decode_body,
    encode_response,
    read_body,
    wants_msgpack,
)

scoring = Blueprint("scoring", __name__)


def request_map() -> dict[str, Any]:
    """The request's body, read within ``max_body_bytes`` and decoded by its Content-Type (msgpack or JSON)."""
    check_content_encoding(request.headers.get("Content-Encoding"))
    body = read_body(request.stream, request.content_length, state().config.max_body_bytes)
    return decode_body(body, request.content_type)


def required_field(body: Mapping[str, Any], key: str) -> Any:
    """``body[key]``; InvalidInputError naming ``key`` when it is missing or null."""
    if body.get(key) is None:
        raise InvalidInputError(key, "is required")
    return body[key]


def check_item_count(count: int) -> None:
    """Raises TooManyItemsError past ``max_items`` (checked before any item is parsed)."""
    limit = state().config.max_items
    if count > limit:
        raise TooManyItemsError(f"{count} items in one request, more than the limit of {limit}")


def _documents(body: Mapping[str, Any], key: str) -> tuple[list[str], list[str]]:
    """(texts, ids) of a non-empty list of strings or items under ``key``, at most ``max_items`` long."""
    raw = required_field(body, key)
    if isinstance(raw, list):
        check_item_count(len(raw))
    documents = parse_documents(raw, field=key)
    if not documents.texts:
        raise InvalidInputError(key, "must not be empty")
    return documents.texts, documents.ids


_KIND_NAMES = {bool: "a boolean", int: "an integer", str: "a string"}


def check_truncation_direction(body: Mapping[str, Any]) -> None:
    """TEI's ``truncation_direction``: only ``Right`` exists here (the input's end is cut)."""
    direction = optional_field(body, "truncation_direction", str, "Right")
    if direction.lower() != "right":
        raise InvalidInputError("truncation_direction", f"only 'Right' is supported, got {direction!r:.80}")


def optional_field(body: Mapping[str, Any], key: str, kind: type, default: Any) -> Any:
    """``body[key]`` (a ``kind``: bool, int or str), or ``default`` when it is missing or null; InvalidInputError
    naming ``key`` when it is of another type."""
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        # Cut to 80 characters, here and wherever a message shows a client's value: it can be megabytes.
        raise InvalidInputError(key, f"must be {_KIND_NAMES[kind]}, got {value!r:.80}")
    return value


def _score_texts(
    model: str, query: str, texts: list[str], options: ScoreOptions, field: str = "items",
    instruction: str | None = None,
) -> tuple[np.ndarray, int]:
    """Scores ``query`` against each of ``texts`` (the request's ``field``) through the model's batcher, under
    ``instruction`` (the model's own when None).

    Returns (scores float64 ``(len(texts),)`` in input order, input tokens). Phase times go to ``g.sie_phases``
    for the response headers and metrics.
    """
    current = state()
    served = current.registry.get(model, task="score")
    started = time.perf_counter()
    with served.batcher.slot() as slot:
        try:
            encoded = served.reranker.encode(query, texts, max_length=options.max_length, truncate=options.truncate,
                                             instruction=instruction)
        except InputTooLongError as error:
            if field == "items":
                raise
            # The engine names documents items[i]; this endpoint calls them otherwise.
            raise InputTooLongError(error.field.replace("items", field, 1), error.length, error.limit) from None
        tokenized = time.perf_counter()
        remaining = current.config.request_timeout_s - (tokenized - g.sie_started)
        logits, timings = slot.run(encoded, max(remaining, 0.0), client_gone_check(request.environ))
    g.sie_phases = {"tokenize": tokenized - started, "queue": timings.queue_s, "inference": timings.inference_s}
    return scores_from_logits(logits, options.raw_scores), encoded.num_tokens


@scoring.post("/v1/score/<path:model>")
def score(model: str) -> Response:
    """sie's score API (CONTRACT.md): msgpack or JSON in by Content-Type, out by Accept (msgpack default)."""
    body = request_map()
    options = parse_options(body.get("options"))
    query, query_id = parse_query(required_field(body, "query"))
    instruction = parse_instruction(body.get("instruction"))
    texts, ids = _documents(body, "items")
    scores, tokens = _score_texts(model, query, texts, options, instruction=instruction)
    result = score_result(model, query_id, ids, scores, options.top_k, tokens)
    return encode_response(result, wants_msgpack(request.headers.get("Accept"), default=True))


def _rerank_options(body: Mapping[str, Any]) -> tuple[int | None, bool]:
    """Cohere's ``top_n`` and ``return_documents``."""
    top_n = optional_field(body, "top_n", int, None)
    if top_n is not None and top_n < 1:
        raise InvalidInputError("top_n", f"must be a positive integer, got {top_n}")
    return top_n, optional_field(body, "return_documents", bool, False)


def _cohere_documents(body: Mapping[str, Any], returned_as_msgpack: bool | None) -> tuple[list[str], list[Any]]:
    """(texts, documents as returned) of Cohere's ``documents``: strings, or objects whose ``text`` is scored and
    whose other fields (``id`` of any type among them) are the caller's own, given back as they came (Cohere: "all
    other fields will be preserved in the response"). ``returned_as_msgpack`` says how they are returned (None: they
    are not); one the answer cannot carry is refused naming it."""
    raw = required_field(body, "documents")
    if isinstance(raw, list):
        check_item_count(len(raw))
    documents = item_list(raw, "documents")
    texts = [item_text(document, f"documents[{index}]") for index, document in enumerate(documents)]
    if not texts:
        raise InvalidInputError("documents", "must not be empty")
    if returned_as_msgpack is not None:
        for index, document in enumerate(documents):
            check_encodable(document, returned_as_msgpack, f"documents[{index}]")
    return texts, [{"text": document} if isinstance(document, str) else document for document in documents]


def _cohere_rerank(api_version: str) -> Response:
    body = request_map()
    as_msgpack = wants_msgpack(request.headers.get("Accept"), default=False)
    # Cohere's clients send the model they were given, possibly "": that means the server's default here.
    model = optional_field(body, "model", str, "") or state().registry.default_model
    query, _ = parse_query(required_field(body, "query"))
    top_n, return_documents = _rerank_options(body)
    texts, documents = _cohere_documents(body, as_msgpack if return_documents else None)
    scores, tokens = _score_texts(model, query, texts, ScoreOptions(), field="documents")
    results = []
    for index in ranking(scores, top_n):
        result: dict[str, Any] = {"index": int(index), "relevance_score": float(scores[index])}
        if return_documents:
            result["document"] = documents[index]
        results.append(result)
    payload = {
        "id": str(uuid.uuid4()),
        "model": model,
        "results": results,
        "meta": {"api_version": {"version": api_version}, "billed_units": {"search_units": 1},
                 "tokens": {"input_tokens": tokens}},
        "usage": {"total_tokens": tokens},
    }
    return encode_response(payload, as_msgpack)


@scoring.post("/v1/rerank")
def rerank_v1() -> Response:
    """Cohere v1 / Jina rerank: ``{model?, query, documents, top_n?, return_documents?}``."""
    return _cohere_rerank("1")


@scoring.post("/v2/rerank")
def rerank_v2() -> Response:
    """Cohere v2 rerank (ClientV2 with a custom base URL); the same shape as v1."""
    return _cohere_rerank("2")


@scoring.post("/rerank")
def rerank_tei() -> Response:
    """text-embeddings-inference rerank: ``{query, texts, raw_scores?, return_text?, truncate?}`` -> sorted list.

    The default model answers. ``truncate`` defaults to true (TEI's ``--auto-truncate``); false makes a too
    long pair a 400 ``INPUT_TOO_LONG``. Only right truncation exists (the document's end is cut).
    """
    body = request_map()
    query, _ = parse_query(required_field(body, "query"))
    texts, _ = _documents(body, "texts")
    check_truncation_direction(body)
    options = ScoreOptions(raw_scores=optional_field(body, "raw_scores", bool, False),
                           truncate=optional_field(body, "truncate", bool, True))
    return_text = optional_field(body, "return_text", bool, False)
    scores, _ = _score_texts(state().registry.default_model, query, texts, options, field="texts")
    results = []
    for index in ranking(scores):
        result: dict[str, Any] = {"index": int(index), "score": float(scores[index])}
        if return_text:
            result["text"] = texts[index]
        results.append(result)
    return encode_response(results, wants_msgpack(request.headers.get("Accept"), default=False))
