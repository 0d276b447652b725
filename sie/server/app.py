"""``create_app``: the Flask application of one worker process.

gunicorn calls it in each worker after fork (never ``--preload``: CUDA does not survive a fork), so every
worker builds its own models and batchers; they live on ``app.extensions["sie"]``.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from typing import Any

from flask import Flask, Response, g, request
from werkzeug.routing import PathConverter

from sie.server.auth import ApiKeys
from sie.server.config import ServerConfig
from sie.server.encode_routes import encoding
from sie.server.errors import error_response
from sie.server.metrics import Metrics
from sie.server.model_registry import ModelRegistry
from sie.server.ops import ops
from sie.server.routes import scoring
from sie.server.state import EXTENSION, ServerState, state
from sie.version import __version__

logger = logging.getLogger(__name__)


def _start_request() -> None:
    g.sie_started = time.perf_counter()
    g.sie_phases = {}
    state().keys.check(request.path, request.headers.get("Authorization"))


def _finish_request(response: Response) -> Response:
    current = state()
    total = time.perf_counter() - g.get("sie_started", time.perf_counter())
    phases = g.get("sie_phases", {})
    response.headers["X-SIE-Server-Version"] = __version__
    response.headers["X-SIE-Request-ID"] = request.headers.get("X-SIE-Request-ID") or uuid.uuid4().hex
    # Milliseconds, like most servers' timing headers.
    response.headers["X-Queue-Time"] = f"{1000 * phases.get('queue', 0.0):.3f}"
    response.headers["X-Inference-Time"] = f"{1000 * phases.get('inference', 0.0):.3f}"
    response.headers["X-Total-Time"] = f"{1000 * total:.3f}"
    endpoint = request.url_rule.rule if request.url_rule is not None else "unmatched"
    current.metrics.observe_request(endpoint, response.status_code)
    if phases:
        for phase, seconds in phases.items():
            current.metrics.observe_phase(phase, seconds)
        current.metrics.observe_phase("total", total)
    return response


class ModelIdConverter(PathConverter):
    """A model in a URL: an id (``org/name``) or a folder served by its absolute path, which sie-sdk puts in the URL
    as it is (``/v1/score//srv/models/m``): werkzeug's ``path`` takes no leading slash."""

    regex = ".+?"
    part_isolating = False  # spans "/": werkzeug would infer True from a regex without one


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """The application: defaults -> ``SIE_*`` environment -> ``config`` (settings by name, e.g. in tests).

    Starts loading the configured models on a background thread; ``/readyz`` says when they are ready.
    """
    settings = ServerConfig.from_env().override(config)
    app = Flask("sie.server")
    # A model served by its absolute path makes "//" in its URLs: not a redirect to another model's URL.
    app.url_map.merge_slashes = False
    # In place of werkzeug's own: the rules, and the endpoint label of the metrics, still read <path:model>.
    app.url_map.converters["path"] = ModelIdConverter
    metrics = Metrics()
    registry = ModelRegistry(settings, metrics)
    app.extensions[EXTENSION] = ServerState(config=settings, registry=registry, metrics=metrics,
                                            keys=ApiKeys(settings.api_keys))
    app.register_blueprint(scoring)
    app.register_blueprint(encoding)
    app.register_blueprint(ops)
    app.before_request(_start_request)
    app.after_request(_finish_request)
    app.register_error_handler(Exception, error_response)
    registry.start()
    logger.info("sie server %s: models %s, API keys %s", __version__, ", ".join(settings.models),
                "required" if settings.api_keys else "off")
    return app
