"""POST /v1/score/{model} in process: the contract's shape, content negotiation, options, and scores equal to
the engine's (sie-sdk meets the endpoint on a real server in test_sdk_compat.py)."""

from __future__ import annotations

import json

import msgpack
import numpy as np
import pytest
import torch

from sie import Reranker
from sie.inputs import SCORE_OPTIONS, scores_from_logits
from tests.server.conftest import TINY_BERT, wait_ready
from sie.testing.words import random_text

PATH = f"/v1/score/{TINY_BERT}"


def _request(rng: np.random.Generator, num_items: int) -> dict:
    return {"query": {"id": "q-7", "text": random_text(rng, 6)},
            "items": [{"id": f"doc-{i}", "text": random_text(rng, int(rng.integers(1, 40)))} for i in range(num_items)]}


def test_score_matches_the_engine_and_echoes_ids(client, tiny_reranker, rng):
    body = _request(rng, 9)
    body["items"][4].pop("id")  # one item without an id gets its position
    reply = client.post(PATH, body)
    assert reply.status == 200, reply.body
    assert reply.headers["content-type"] == "application/msgpack"
    result = reply.data()
    assert result["model"] == TINY_BERT and result["query_id"] == "q-7"
    texts = [item["text"] for item in body["items"]]
    encoded = tiny_reranker.encode(body["query"]["text"], texts)
    expected = scores_from_logits(tiny_reranker.logits(encoded), raw_scores=False)
    ids = [item.get("id", f"item-{i}") for i, item in enumerate(body["items"])]
    got = {entry["item_id"]: entry["score"] for entry in result["scores"]}
    assert sorted(got) == sorted(ids) and "item-4" in got
    np.testing.assert_allclose([got[item_id] for item_id in ids], expected, rtol=0, atol=1e-6)
    assert [entry["rank"] for entry in result["scores"]] == list(range(9))
    scores = [entry["score"] for entry in result["scores"]]
    assert scores == sorted(scores, reverse=True)
    assert result["usage"]["input_tokens"] == encoded.num_tokens


def test_json_in_json_out_like_the_guides_curl(client):
    body = {"query": {"text": "What is machine learning?"},
            "items": [{"text": "Machine learning uses algorithms to learn from data."},
                      # Fields the server does not use are ignored, as the contract says.
                      {"text": "The weather is sunny today.", "metadata": {"source": "x"}, "images": []}]}
    reply = client.post(PATH, body, msgpack_in=False, accept="application/json")
    assert reply.status == 200 and reply.headers["content-type"] == "application/json"
    result = json.loads(reply.body)
    assert sorted(entry["item_id"] for entry in result["scores"]) == ["item-0", "item-1"]
    assert result["query_id"] is None


@pytest.mark.parametrize(("accept", "msgpack_out"), [
    (None, True),  # sie-sdk's rule: msgpack unless JSON is asked for
    ("*/*", True),
    ("application/msgpack", True),
    ("application/json", False),
    ("application/json, application/msgpack", True),  # a msgpack type named anywhere wins
])
def test_response_format_follows_accept_whatever_the_content_type(client, accept, msgpack_out):
    body = {"query": "what", "items": ["a python", "the weather"]}
    reply = client.post(PATH, body, msgpack_in=False, accept=accept)
    assert reply.status == 200
    if msgpack_out:
        assert reply.headers["content-type"] == "application/msgpack"
        assert msgpack.unpackb(reply.body)["model"] == TINY_BERT
    else:
        assert json.loads(reply.body)["model"] == TINY_BERT


def test_options_top_k_raw_scores_and_instruction(client, tiny_reranker, rng):
    body = _request(rng, 6)
    body["instruction"] = "Given a web search query, retrieve relevant passages"
    body["options"] = {"top_k": 3, "raw_scores": True}
    result = client.post(PATH, body).data()
    texts = [item["text"] for item in body["items"]]
    logits = tiny_reranker.logits(tiny_reranker.encode(f"{body['instruction']} {body['query']['text']}", texts))
    order = np.argsort(-logits, kind="stable")[:3]
    assert [entry["item_id"] for entry in result["scores"]] == [f"doc-{i}" for i in order]
    np.testing.assert_allclose([entry["score"] for entry in result["scores"]], logits[order], rtol=0, atol=1e-5)


def test_a_null_option_is_its_default(client, rng):
    """As a null top_k or max_length already was: raw_scores and truncate were refused when null ("must be a
    boolean, got None"), and clients that write every field of their options send the unset ones as null."""
    body = _request(rng, 3)
    plain = client.post(PATH, body).data()
    reply = client.post(PATH, {**body, "options": dict.fromkeys(SCORE_OPTIONS)})
    assert reply.status == 200, reply.body
    assert reply.data()["scores"] == plain["scores"]


def test_max_length_truncates_and_truncate_false_refuses(client, tiny_reranker):
    long_text = " ".join(["python"] * 50)
    body = {"query": "what", "items": [{"id": "short", "text": "rain"}, {"id": "long", "text": long_text}],
            "options": {"max_length": 16}}
    result = client.post(PATH, body).data()
    expected = tiny_reranker.logits(tiny_reranker.encode("what", ["rain", long_text], max_length=16))
    got = {entry["item_id"]: entry["score"] for entry in result["scores"]}
    np.testing.assert_allclose([got["short"], got["long"]], scores_from_logits(expected, False), atol=1e-6)
    assert result["usage"]["input_tokens"] <= 32

    body["options"]["truncate"] = False
    reply = client.post(PATH, body)
    assert reply.status == 400
    detail = reply.data()["detail"]
    assert detail["code"] == "INPUT_TOO_LONG" and detail["param"] == "items[1]"
    assert reply.headers["x-sie-error-code"] == "INPUT_TOO_LONG"


def test_timing_and_version_headers(client):
    from sie import __version__

    reply = client.post(PATH, {"query": "what", "items": ["python"]})
    assert reply.headers["x-sie-server-version"] == __version__
    queue, inference, total = (float(reply.headers[f"x-{name}-time"]) for name in ("queue", "inference", "total"))
    assert 0 <= queue <= total and 0 < inference <= total
    assert reply.headers["x-sie-request-id"]


def test_an_int8_server_says_so_and_scores_as_the_int8_engine(make_app, tiny_models_dir, rng):
    client = make_app(dtype="int8")
    assert wait_ready(client).status == 200
    models = {model["name"]: model for model in client.get("/v1/models").data()["models"]}
    assert models[TINY_BERT]["dtype"] == "int8"
    body = _request(rng, 12)
    reply = client.post(PATH, body)
    assert reply.status == 200, reply.body
    engine = Reranker(str(tiny_models_dir / TINY_BERT), device="cpu", dtype=torch.int8)
    encoded = engine.encode(body["query"]["text"], [item["text"] for item in body["items"]])
    expected = scores_from_logits(engine.logits(encoded), raw_scores=False)
    # Per-token scales and one attention call per sequence on the CPU: the batcher's grouping changes no score.
    got = {entry["item_id"]: entry["score"] for entry in reply.data()["scores"]}
    np.testing.assert_allclose([got[f"doc-{i}"] for i in range(12)], expected, rtol=0, atol=1e-6)
