"""Operations endpoints: liveness, readiness, the model list and Prometheus metrics."""

from __future__ import annotations

from flask import Blueprint, Response
from prometheus_client import CONTENT_TYPE_LATEST

from sie.server.errors import ModelNotServedError, NotReadyLoadFailedError, NotReadyLoadingError
from sie.server.state import state
from sie.server.wire import encode_response

ops = Blueprint("ops", __name__)


@ops.get("/healthz")
def healthz() -> Response:
    """Alive: the worker answers (models may still be loading)."""
    return encode_response({"status": "ok"}, as_msgpack=False)


@ops.get("/readyz")
def readyz() -> Response:
    """Ready once every configured model is loaded; 503 ``MODEL_LOADING`` (or ``MODEL_LOAD_FAILED``) before."""
    pending = state().registry.pending()
    if not pending:
        return encode_response({"status": "ready"}, as_msgpack=False)
    models = sorted(pending)
    failed = {name: reason for name, reason in pending.items() if reason != "loading"}
    if failed:
        message = "; ".join(f"{name} failed to load: {reason}" for name, reason in failed.items())
        raise NotReadyLoadFailedError(message, models)
    raise NotReadyLoadingError(f"loading {', '.join(models)}", models)


@ops.get("/v1/models")
def models() -> Response:
    """Loaded, loading, failed and installed models, with max length, dtype, device and backends when loaded."""
    return encode_response({"models": state().registry.describe()}, as_msgpack=False)


@ops.get("/v1/models/<path:model>")
def model_info(model: str) -> Response:
    """One model's entry of ``GET /v1/models`` (sie-sdk's ``get_model``); 404 ``MODEL_NOT_FOUND`` for one not
    listed there. Loads nothing."""
    described = state().registry.describe()
    for info in described:
        if info["name"] == model:
            return encode_response(info, as_msgpack=False)
    raise ModelNotServedError(model, [info["name"] for info in described])


@ops.get("/metrics")
def metrics() -> Response:
    """Prometheus text exposition of this worker's metrics."""
    return Response(state().metrics.render(), content_type=CONTENT_TYPE_LATEST)
