"""One table maps every exception a request can raise to its HTTP status and error code (CONTRACT.md).

The body is always JSON ``{"detail": {"code", "message", ...}}`` with the code repeated in the
``X-SIE-Error-Code`` header; 503s carry ``Retry-After`` so sie-sdk retries them. Anything not in the table
is a bug on our side: 500 with a generic message, the traceback in the log only.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Any

from flask import Response
from werkzeug.exceptions import HTTPException

from sie.errors import InputTooLongError, InvalidInputError, ModelNotFoundError, SieError, UnsupportedModelError

logger = logging.getLogger(__name__)


class ServerError(SieError):
    """Base of the errors only the server raises."""


class UnauthorizedError(ServerError):
    """No API key, or one that is not configured."""


class PayloadTooLargeError(ServerError):
    """The request body is larger than ``max_body_bytes``."""


class BuffersFullError(ServerError):
    """The worker already holds ``max_buffered_bytes`` of requests still arriving; the client retries after
    ``Retry-After``."""


class TooManyItemsError(ServerError):
    """More items than ``max_items`` in one request."""


class ResponseTooLargeError(ServerError):
    """An encode request whose vectors would pass ``max_response_bytes``."""


class ModelNotServedError(ServerError, LookupError):
    """The requested model is neither loaded nor loadable here; ``available`` lists what is."""

    def __init__(self, model: str, available: list[str]) -> None:
        self.model = model
        self.available = available
        listing = ", ".join(available) if available else "none"
        super().__init__(f"model {model!r:.80} is not available on this server; available: {listing}")


class ModelLoadingError(ServerError):
    """The model is still loading; the client retries after ``Retry-After``."""


class ModelLoadFailedError(ServerError):
    """Loading the model failed; retrying will not help until the server is fixed."""


class NotReadyError(ServerError):
    """``/readyz``: configured models are not loaded yet; ``models`` names every one of them."""

    def __init__(self, message: str, models: list[str]) -> None:
        self.models = models
        super().__init__(message)


class NotReadyLoadingError(NotReadyError):
    """Not ready: the configured models are still loading; a probe retries after ``Retry-After``."""


class NotReadyLoadFailedError(NotReadyError):
    """Not ready: a configured model failed to load; this worker stays unready until it is fixed."""


class QueueFullError(ServerError):
    """The model's queue is at ``max_queue``; the client retries after ``Retry-After``."""


class RequestTimeoutError(ServerError):
    """The request was not answered within ``request_timeout_s``."""


class ClientGoneError(ServerError):
    """The client closed its connection while its request waited: nobody reads the answer, so it never ran."""


@dataclass(frozen=True)
class ErrorKind:
    """What an exception class is answered with."""

    status: int
    code: str
    retry_after_s: int | None = None


# Most specific classes first: the first entry the exception is an instance of wins.
ERRORS: tuple[tuple[type[BaseException], ErrorKind], ...] = (
    (InputTooLongError, ErrorKind(400, "INPUT_TOO_LONG")),
    (InvalidInputError, ErrorKind(400, "INVALID_INPUT")),
    (UnauthorizedError, ErrorKind(401, "UNAUTHORIZED")),
    (ModelNotServedError, ErrorKind(404, "MODEL_NOT_FOUND")),
    (ModelNotFoundError, ErrorKind(404, "MODEL_NOT_FOUND")),
    (PayloadTooLargeError, ErrorKind(413, "PAYLOAD_TOO_LARGE")),
    (TooManyItemsError, ErrorKind(413, "TOO_MANY_ITEMS")),
    (ResponseTooLargeError, ErrorKind(413, "RESPONSE_TOO_LARGE")),
    (ModelLoadFailedError, ErrorKind(502, "MODEL_LOAD_FAILED")),
    (UnsupportedModelError, ErrorKind(502, "MODEL_LOAD_FAILED")),
    (ModelLoadingError, ErrorKind(503, "MODEL_LOADING", retry_after_s=2)),
    # Readiness is about the worker, not one request's model: 503 even when loading failed (a request for the
    # failed model gets 502), and no Retry-After then, since waiting will not help.
    (NotReadyLoadFailedError, ErrorKind(503, "MODEL_LOAD_FAILED")),
    (NotReadyLoadingError, ErrorKind(503, "MODEL_LOADING", retry_after_s=2)),
    (QueueFullError, ErrorKind(503, "QUEUE_FULL", retry_after_s=1)),
    (BuffersFullError, ErrorKind(503, "RESOURCE_EXHAUSTED", retry_after_s=1)),
    (RequestTimeoutError, ErrorKind(504, "TIMEOUT", retry_after_s=1)),
    # nginx's status for a request its client abandoned: counted in the metrics and the access log, read by nobody.
    (ClientGoneError, ErrorKind(499, "CLIENT_CLOSED_REQUEST")),
)
INTERNAL = ErrorKind(500, "INTERNAL_ERROR")

# An absolute path: a slash that does not continue a word, a relative path or a URL, then its parts; group 1 is
# the last.
_ABSOLUTE_PATH = re.compile(r"(?<![\w.~:/-])/(?:[^\s'\"/]+/)*([^\s'\"/]*)")


def without_local_paths(message: str) -> str:
    """``message`` with each absolute path cut to its last part: a client learns which file, not where the server
    keeps its files (``/srv/models/m/model.safetensors is damaged`` -> ``model.safetensors is damaged``)."""
    return _ABSOLUTE_PATH.sub(r"\1", message)


def kind_of(error: BaseException) -> ErrorKind:
    """The table's entry for ``error``, or ``INTERNAL``."""
    for error_class, kind in ERRORS:
        if isinstance(error, error_class):
            return kind
    return INTERNAL


def _detail(error: BaseException, kind: ErrorKind) -> dict[str, Any]:
    if kind is INTERNAL:
        return {"code": kind.code, "message": "internal server error; the server log has the details"}
    if isinstance(error, InvalidInputError):
        return {"code": kind.code, "message": str(error), "param": error.field}
    if isinstance(error, ModelNotServedError):
        return {"code": kind.code, "message": str(error), "available": error.available}
    if isinstance(error, ModelNotFoundError):
        # Its message lists local paths that were searched: not the client's business.
        return {"code": kind.code, "message": f"model {error.model!r:.80} was not found"}
    if isinstance(error, NotReadyError):
        return {"code": kind.code, "message": str(error), "models": error.models}
    return {"code": kind.code, "message": str(error)}


def _error_body(status: int, detail: dict[str, Any], retry_after_s: int | None = None) -> Response:
    """A JSON error response ``{"detail": detail}``; ``detail`` has at least ``code`` and ``message``."""
    response = Response(json.dumps({"detail": detail}), status=status, mimetype="application/json")
    response.headers["X-SIE-Error-Code"] = detail["code"]
    if retry_after_s is not None:
        response.headers["Retry-After"] = str(retry_after_s)
    return response


def error_response(error: BaseException) -> Response:
    """The response for an exception raised while handling a request."""
    if isinstance(error, HTTPException):
        # Routing errors (unknown path, wrong method) from Flask itself.
        code = (error.name or "error").upper().replace(" ", "_")
        response = _error_body(error.code or 500, {"code": code, "message": error.description or error.name})
        # Its own headers other than the HTML body's type: a 405 must say which methods are allowed (Allow).
        for name, value in error.get_headers():
            if name.lower() != "content-type":
                response.headers[name] = value
        return response
    kind = kind_of(error)
    if kind is INTERNAL:
        logger.exception("unhandled error while serving a request", exc_info=error)
    return _error_body(kind.status, _detail(error, kind), kind.retry_after_s)
