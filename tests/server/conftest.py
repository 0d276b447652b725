"""Fixtures of the server tests: tiny random checkpoints in a models directory, the application on them in
process (Flask's test client), and real servers (gunicorn) on them.

What a request gets back (validation, error bodies, content negotiation, scores, the ops endpoints) is tested
in process; lifecycle, concurrency, timing, socket-level limits and the published clients need a real server.
The default-settings app and server are shared by the whole session; those with special settings live in the
test or module that needs them. Tiny models keep start-up and requests fast where the real model is not the
point.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from sie import Reranker
from sie.server import create_app
from sie.server.state import EXTENSION
from sie.testing import make_random_checkpoint
from sie.testing.server import HttpClient, Reply, ServerProcess

TINY_BERT = "test/tiny-bert"
TINY_XLMR = "test/tiny-xlmr"
READY_TIMEOUT_S = 60.0


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sie models directory holding ``test/tiny-bert`` and ``test/tiny-xlmr``."""
    root = tmp_path_factory.mktemp("sie-models")
    make_random_checkpoint(root / TINY_BERT, "bert", seed=3)
    make_random_checkpoint(root / TINY_XLMR, "xlm-roberta", seed=4)
    return root


class AppClient(HttpClient):
    """HttpClient's calls and Replies over Flask's test client, so a test reads the same in process as on gunicorn."""

    def __init__(self, app: Flask) -> None:
        super().__init__(port=0)  # never connects: request() goes through the test client
        self.app = app
        self._test_client = app.test_client()

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: Mapping[str, str] | None = None) -> Reply:
        response = self._test_client.open(path, method=method, data=body, headers=dict(headers or {}))
        return Reply(response.status_code, {name.lower(): value for name, value in response.headers.items()},
                     response.get_data())


def wait_ready(client: HttpClient, timeout_s: float = READY_TIMEOUT_S) -> Reply:
    """Polls ``/readyz`` while it answers 503 MODEL_LOADING; returns the first other answer."""
    deadline = time.monotonic() + timeout_s
    while (reply := client.get("/readyz")).status == 503 and reply.data()["detail"]["code"] == "MODEL_LOADING":
        assert time.monotonic() < deadline, "the models never finished loading"
        time.sleep(0.02)
    return reply


def _tiny_app(**overrides: Any) -> Flask:
    """create_app on CPU with ``test/tiny-bert`` unless ``overrides`` name other models."""
    return create_app({"models": [TINY_BERT], "device": "cpu", **overrides})


@pytest.fixture(scope="session")
def app(tiny_models_dir: Path) -> Iterator[Flask]:
    """The default-settings application on test/tiny-bert, loaded (test/tiny-xlmr loads on demand)."""
    # The models directory is set only while loading: the rest of the session (the real default model's tests
    # among them) must not see it. Tests see it through `client`.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SIE_MODELS_DIR", str(tiny_models_dir))
        application = _tiny_app()
        ready = wait_ready(AppClient(application))
    try:
        assert ready.status == 200, ready.body
        yield application
    finally:
        application.extensions[EXTENSION].registry.close()


@pytest.fixture
def client(app: Flask, tiny_models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> AppClient:
    """A client of the shared app; the tiny models directory is the sie one for the test (on-demand loading)."""
    monkeypatch.setenv("SIE_MODELS_DIR", str(tiny_models_dir))
    return AppClient(app)


@pytest.fixture
def make_app(tiny_models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., AppClient]]:
    """Builds apps with other settings (``create_app`` overrides by name) and returns a client of each.

    The apps start loading, like any; ``wait_ready`` waits for them. Their batchers are closed at teardown.
    """
    monkeypatch.setenv("SIE_MODELS_DIR", str(tiny_models_dir))
    apps: list[Flask] = []

    def make(**overrides: Any) -> AppClient:
        apps.append(_tiny_app(**overrides))
        return AppClient(apps[-1])

    yield make
    for built in apps:
        built.extensions[EXTENSION].registry.close()


def tiny_server(models_dir: Path, *args: str, **kwargs) -> ServerProcess:
    """A server on CPU over ``models_dir`` that loads ``test/tiny-bert`` unless ``args`` name other models."""
    models = () if "--model" in args else ("--model", TINY_BERT)
    return ServerProcess(["--device", "cpu", *models, *args],
                         env={"SIE_MODELS_DIR": str(models_dir), "HF_HUB_OFFLINE": "1"}, **kwargs)


@pytest.fixture(scope="session")
def server(tiny_models_dir: Path) -> Iterator[ServerProcess]:
    """The default-settings server on test/tiny-bert (test/tiny-xlmr loads on demand)."""
    with tiny_server(tiny_models_dir) as running:
        yield running


@pytest.fixture(scope="session")
def tiny_reranker(tiny_models_dir: Path) -> Reranker:
    """test/tiny-bert in process: the reference for the server's scores."""
    return Reranker(str(tiny_models_dir / TINY_BERT), device="cpu")
