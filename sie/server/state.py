"""What one worker's application holds (on ``app.extensions["sie"]``), and scoring through its batchers."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from flask import current_app, g

from sie.errors import InputTooLongError
from sie.inputs import ScoreOptions, scores_from_logits
from sie.server.auth import ApiKeys
from sie.server.config import ServerConfig
from sie.server.errors import TooManyItemsError
from sie.server.metrics import Metrics
from sie.server.model_registry import ModelRegistry

EXTENSION = "sie"


@dataclass(frozen=True)
class ServerState:
    """Settings, models, metrics and keys of one worker."""

    config: ServerConfig
    registry: ModelRegistry
    metrics: Metrics
    keys: ApiKeys


def state() -> ServerState:
    """The current application's ServerState."""
    return current_app.extensions[EXTENSION]


def check_item_count(count: int) -> None:
    """Raises TooManyItemsError past ``max_items`` (checked before any item is parsed)."""
    limit = state().config.max_items
    if count > limit:
        raise TooManyItemsError(f"{count} items in one request, more than the limit of {limit}")


def score_texts(
    model: str, query: str, texts: list[str], options: ScoreOptions, field: str = "items"
) -> tuple[np.ndarray, int]:
    """Scores ``query`` against each of ``texts`` (the request's ``field``) through the model's batcher.

    Returns (scores float64 ``(len(texts),)`` in input order, input tokens). Phase times go to ``g.sie_phases``
    for the response headers and metrics.
    """
    current = state()
    served = current.registry.get(model)
    started = time.perf_counter()
    with served.batcher.slot() as slot:
        try:
            encoded = served.reranker.encode(query, texts, max_length=options.max_length, truncate=options.truncate)
        except InputTooLongError as error:
            if field == "items":
                raise
            # The engine names documents items[i]; this endpoint calls them otherwise.
            raise InputTooLongError(error.field.replace("items", field, 1), error.length, error.limit) from None
        tokenized = time.perf_counter()
        remaining = current.config.request_timeout_s - (tokenized - g.sie_started)
        logits, timings = slot.run(encoded, max(remaining, 0.0))
    g.sie_phases = {"tokenize": tokenized - started, "queue": timings.queue_s, "inference": timings.inference_s}
    return scores_from_logits(logits, options.raw_scores), encoded.num_tokens
