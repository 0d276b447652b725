"""What one worker's application holds, on ``app.extensions["sie"]``."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from sie.server.auth import ApiKeys
from sie.server.config import ServerConfig
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
