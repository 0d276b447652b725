"""create_app in process: settings passed by name override the environment (the test layer of the config)."""

from __future__ import annotations

import time

import msgpack

from sie.server import create_app
from tests.server.conftest import TINY_BERT


def test_create_app_overrides_win_over_the_environment(tiny_models_dir, monkeypatch):
    monkeypatch.setenv("SIE_MODELS_DIR", str(tiny_models_dir))
    monkeypatch.setenv("SIE_MAX_ITEMS", "1000")
    app = create_app({"models": [TINY_BERT], "device": "cpu", "max_items": 2})
    client = app.test_client()
    deadline = time.monotonic() + 60
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, "the model never loaded"
        time.sleep(0.05)
    path = f"/v1/score/{TINY_BERT}"
    headers = {"Content-Type": "application/msgpack"}
    too_many = client.post(path, data=msgpack.packb({"query": "q", "items": ["a", "b", "c"]}), headers=headers)
    assert too_many.status_code == 413 and too_many.json["detail"]["code"] == "TOO_MANY_ITEMS"
    ok = client.post(path, data=msgpack.packb({"query": "q", "items": ["a", "b"]}), headers=headers)
    assert ok.status_code == 200 and len(msgpack.unpackb(ok.data)["scores"]) == 2
    app.extensions["sie"].registry.close()
