"""create_app in process: settings passed by name override the environment (the test layer of the config)."""

from __future__ import annotations

import msgpack

from tests.server.conftest import TINY_BERT, wait_ready


def test_create_app_overrides_win_over_the_environment(make_app, monkeypatch):
    monkeypatch.setenv("SIE_MAX_ITEMS", "1000")
    client = make_app(max_items=2)
    assert wait_ready(client).status == 200, "the model never loaded"
    path = f"/v1/score/{TINY_BERT}"
    headers = {"Content-Type": "application/msgpack"}
    too_many = client.request("POST", path, msgpack.packb({"query": "q", "items": ["a", "b", "c"]}), headers)
    assert too_many.status == 413 and too_many.headers["content-type"] == "application/json"
    assert too_many.data()["detail"]["code"] == "TOO_MANY_ITEMS"
    ok = client.request("POST", path, msgpack.packb({"query": "q", "items": ["a", "b"]}), headers)
    assert ok.status == 200 and len(msgpack.unpackb(ok.body)["scores"]) == 2
