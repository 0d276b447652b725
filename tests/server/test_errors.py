"""The error table: each exception's status, code, body and headers; anything else is a bare 500."""

from __future__ import annotations

import json

import pytest
from flask import Flask
from werkzeug.exceptions import MethodNotAllowed

from sie.errors import InputTooLongError, InvalidInputError, ModelNotFoundError, UnsupportedModelError
from sie.server.errors import (
    BuffersFullError,
    ClientGoneError,
    ModelLoadFailedError,
    ModelLoadingError,
    ModelNotServedError,
    NotReadyLoadFailedError,
    NotReadyLoadingError,
    PayloadTooLargeError,
    QueueFullError,
    RequestTimeoutError,
    TooManyItemsError,
    UnauthorizedError,
    error_response,
    without_local_paths,
)


@pytest.fixture(autouse=True)
def app_context():
    with Flask(__name__).app_context():
        yield


@pytest.mark.parametrize(("error", "status", "code", "retry_after"), [
    (InputTooLongError("items[2]", 600, 512), 400, "INPUT_TOO_LONG", None),
    (InvalidInputError("items[3].text", "must be a string"), 400, "INVALID_INPUT", None),
    (UnauthorizedError("invalid API key"), 401, "UNAUTHORIZED", None),
    (ModelNotServedError("x/y", ["a/b"]), 404, "MODEL_NOT_FOUND", None),
    (ModelNotFoundError("x/y", ["/secret/path"]), 404, "MODEL_NOT_FOUND", None),
    (PayloadTooLargeError("too big"), 413, "PAYLOAD_TOO_LARGE", None),
    (TooManyItemsError("too many"), 413, "TOO_MANY_ITEMS", None),
    (ModelLoadFailedError("broken"), 502, "MODEL_LOAD_FAILED", None),
    (UnsupportedModelError("two labels"), 502, "MODEL_LOAD_FAILED", None),
    (ModelLoadingError("loading"), 503, "MODEL_LOADING", "2"),
    (NotReadyLoadFailedError("m failed to load: E", ["m"]), 503, "MODEL_LOAD_FAILED", None),
    (NotReadyLoadingError("loading m", ["m"]), 503, "MODEL_LOADING", "2"),
    (QueueFullError("full"), 503, "QUEUE_FULL", "1"),
    (BuffersFullError("full"), 503, "RESOURCE_EXHAUSTED", "1"),
    (RequestTimeoutError("late"), 504, "TIMEOUT", "1"),
    (ClientGoneError("gone"), 499, "CLIENT_CLOSED_REQUEST", None),
])
def test_each_error_gets_its_status_code_and_headers(error, status, code, retry_after):
    response = error_response(error)
    assert response.status_code == status and response.mimetype == "application/json"
    detail = json.loads(response.get_data())["detail"]
    assert detail["code"] == code and response.headers["X-SIE-Error-Code"] == code
    assert detail["message"]
    assert response.headers.get("Retry-After") == retry_after


@pytest.mark.parametrize("error_class", [ModelNotServedError, ModelNotFoundError])
def test_an_unknown_models_name_is_cut_in_the_message(error_class):
    message = json.loads(error_response(error_class("m" * 5000, [])).get_data())["detail"]["message"]
    assert "m" * 70 in message and len(message) < 200


def test_details_name_the_field_and_the_available_models_but_no_paths():
    assert json.loads(error_response(InvalidInputError("items[3].text", "bad")).get_data())["detail"]["param"] == \
        "items[3].text"
    assert json.loads(error_response(ModelNotServedError("x", ["a", "b"])).get_data())["detail"]["available"] == \
        ["a", "b"]
    assert "/secret/path" not in error_response(ModelNotFoundError("x/y", ["/secret/path"])).get_data(as_text=True)


@pytest.mark.parametrize(("error", "code"), [
    (NotReadyLoadingError("loading a, b", ["a", "b"]), "MODEL_LOADING"),
    (NotReadyLoadFailedError("a failed to load: OSError: gone", ["a", "b"]), "MODEL_LOAD_FAILED"),
])
def test_readiness_details_list_every_model_not_ready(error, code):
    detail = json.loads(error_response(error).get_data())["detail"]
    assert detail == {"code": code, "message": str(error), "models": ["a", "b"]}


def test_an_unexpected_exception_is_a_500_without_its_message():
    response = error_response(RuntimeError("database password is hunter2"))
    assert response.status_code == 500
    assert "hunter2" not in response.get_data(as_text=True)
    assert json.loads(response.get_data())["detail"]["code"] == "INTERNAL_ERROR"


def test_routing_errors_keep_their_status():
    response = error_response(MethodNotAllowed(valid_methods=["POST"]))
    assert response.status_code == 405
    assert json.loads(response.get_data())["detail"]["code"] == "METHOD_NOT_ALLOWED"
    assert response.headers["Allow"] == "POST" and response.mimetype == "application/json"


@pytest.mark.parametrize("message, expected", [
    ("/srv/sie/models/org/m/model.safetensors is not a readable checkpoint file",
     "model.safetensors is not a readable checkpoint file"),
    ("the checkpoint in /root/.cache/sie/models/org/m does not match BertModel: missing 'x'",
     "the checkpoint in m does not match BertModel: missing 'x'"),
    ("[Errno 2] No such file or directory: '/tmp/x/config.json'", "[Errno 2] No such file or directory: 'config.json'"),
    # Model ids, relative paths, ratios and URLs' paths are not the server's directories.
    ("model 'org/name' has 2/3 labels in ./config.json; see https://example.com/a", None),
])
def test_load_failures_shown_to_clients_keep_file_names_not_directories(message, expected):
    assert without_local_paths(message) == (message if expected is None else expected)
