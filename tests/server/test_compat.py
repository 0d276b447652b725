"""The Cohere/Jina (/v1/rerank, /v2/rerank) and text-embeddings-inference (/rerank) shapes, scored like
/v1/score by the default (first configured) model unless the request names another, in process (the published
clients meet them on a real server in test_sdk_compat.py)."""

from __future__ import annotations

import numpy as np
import pytest

from sie.inputs import scores_from_logits
from tests.server.conftest import TINY_BERT
from sie.testing.words import random_text


def _expected(reranker, query: str, texts: list[str], raw: bool = False) -> np.ndarray:
    return scores_from_logits(reranker.logits(reranker.encode(query, texts)), raw)


@pytest.mark.parametrize("path", ["/v1/rerank", "/v2/rerank"])
def test_cohere_rerank(client, tiny_reranker, rng, path):
    query = random_text(rng, 5)
    texts = [random_text(rng, int(rng.integers(1, 30))) for _ in range(7)]
    documents = [text if i % 2 else {"text": text} for i, text in enumerate(texts)]  # both forms Cohere takes
    body = {"model": TINY_BERT, "query": query, "documents": documents, "top_n": 4, "return_documents": True}
    reply = client.post(path, body, msgpack_in=False, headers={"Accept": "application/json"})
    assert reply.status == 200 and reply.headers["content-type"] == "application/json"
    result = reply.data()
    expected = _expected(tiny_reranker, query, texts)
    order = np.argsort(-expected, kind="stable")[:4]
    assert [entry["index"] for entry in result["results"]] == order.tolist()
    np.testing.assert_allclose([entry["relevance_score"] for entry in result["results"]], expected[order], atol=1e-6)
    assert [entry["document"]["text"] for entry in result["results"]] == [texts[i] for i in order]
    assert result["meta"]["api_version"]["version"] == path[2]
    assert result["id"] and result["usage"]["total_tokens"] > 0


def test_cohere_rerank_without_model_uses_the_default_and_omits_documents(client):
    reply = client.post("/v1/rerank", {"query": "what", "documents": ["a", "b", "c"]}, msgpack_in=False)
    result = reply.data()
    assert result["model"] == TINY_BERT
    assert sorted(entry["index"] for entry in result["results"]) == [0, 1, 2]
    assert all("document" not in entry for entry in result["results"])


@pytest.mark.parametrize("path", ["/v1/rerank", "/v2/rerank"])
def test_cohere_rerank_keeps_the_callers_document_fields(client, path):
    # Cohere: "If a document is provided the text fields is required and all other fields will be preserved in the
    # response"; an id is the caller's own, of any type.
    documents = [{"id": 7, "text": "paris is the capital of france", "title": "France", "meta": {"page": 3}},
                 "lyon is a city", {"text": "rain", "id": None, "tags": ["a", 1]}]
    body = {"query": "capital of france", "documents": documents, "return_documents": True}
    reply = client.post(path, body, msgpack_in=False, headers={"Accept": "application/json"})
    assert reply.status == 200, reply.body
    returned = {entry["index"]: entry["document"] for entry in reply.data()["results"]}
    assert returned == {0: documents[0], 1: {"text": "lyon is a city"}, 2: documents[2]}


def test_cohere_rerank_refuses_a_document_its_answer_cannot_carry(client):
    body = {"query": "q", "documents": [{"text": "a", "blob": b"\x00\x01"}], "return_documents": True}
    reply = client.post("/v1/rerank", body, headers={"Accept": "application/json"})
    assert reply.status == 400 and reply.data()["detail"]["param"] == "documents[0]"
    reply = client.post("/v1/rerank", body, headers={"Accept": "application/msgpack"})
    assert reply.status == 200 and reply.data()["results"][0]["document"] == {"text": "a", "blob": b"\x00\x01"}
    # JSON in: NaN would make the JSON answer invalid; a key with a lone surrogate or an integer past 64 bits has no
    # msgpack form.
    for document, accept in (('{"text": "a", "w": NaN}', "application/json"),
                             ('{"text": "a", "\\ud800": 1}', "application/msgpack"),
                             ('{"text": "a", "n": 100000000000000000000000000000}', "application/msgpack")):
        raw = f'{{"query": "q", "documents": [{document}], "return_documents": true}}'.encode()
        reply = client.request("POST", "/v1/rerank", raw, {"Content-Type": "application/json", "Accept": accept})
        assert reply.status == 400 and reply.data()["detail"]["param"] == "documents[0]", (document, reply.body)
        unreturned = raw.replace(b'"return_documents": true', b'"return_documents": false')
        assert client.request("POST", "/v1/rerank", unreturned,
                              {"Content-Type": "application/json", "Accept": accept}).status == 200


def test_tei_rerank(client, tiny_reranker, rng):
    query = random_text(rng, 4)
    texts = [random_text(rng, int(rng.integers(1, 30))) for _ in range(5)]
    reply = client.post("/rerank", {"query": query, "texts": texts, "raw_scores": True, "return_text": True},
                        msgpack_in=False)
    assert reply.status == 200
    result = reply.data()
    expected = _expected(tiny_reranker, query, texts, raw=True)
    order = np.argsort(-expected, kind="stable")
    assert [entry["index"] for entry in result] == order.tolist()
    np.testing.assert_allclose([entry["score"] for entry in result], expected[order], atol=1e-5)
    assert [entry["text"] for entry in result] == [texts[i] for i in order]


@pytest.mark.parametrize(("path", "body", "code", "param"), [
    ("/rerank", {"query": "q", "texts": ["a " * 600], "truncate": False}, "INPUT_TOO_LONG", "texts[0]"),
    ("/rerank", {"query": "q", "texts": ["a"], "truncation_direction": "Left"}, "INVALID_INPUT",
     "truncation_direction"),
    ("/rerank", {"query": "q"}, "INVALID_INPUT", "texts"),
    ("/v1/rerank", {"query": "q", "documents": []}, "INVALID_INPUT", "documents"),
    ("/v2/rerank", {"query": "q", "documents": ["a"], "top_n": 0}, "INVALID_INPUT", "top_n"),
    ("/v2/rerank", {"query": "q", "documents": ["a"], "return_documents": "yes"}, "INVALID_INPUT",
     "return_documents"),
    # Present but of the wrong type, even when falsy: never silently the default.
    ("/v1/rerank", {"query": "q", "documents": ["a"], "model": 0}, "INVALID_INPUT", "model"),
    ("/rerank", {"query": "q", "texts": ["a"], "truncation_direction": False}, "INVALID_INPUT",
     "truncation_direction"),
    ("/rerank", {"query": "q " * 600, "texts": ["a"], "truncate": False}, "INPUT_TOO_LONG", "query"),
])
def test_compat_endpoints_validate_like_score(client, path, body, code, param):
    reply = client.post(path, body, msgpack_in=False)
    assert reply.status == 400
    detail = reply.data()["detail"]
    assert detail["code"] == code and detail["param"] == param


def test_cohere_rerank_with_an_empty_model_uses_the_default(client):
    reply = client.post("/v1/rerank", {"model": "", "query": "q", "documents": ["a"]}, msgpack_in=False)
    assert reply.status == 200


def test_cohere_rerank_with_an_unknown_model_is_404(client):
    reply = client.post("/v2/rerank", {"model": "rerank-english-v3.0", "query": "q", "documents": ["a"]},
                        msgpack_in=False)
    assert reply.status == 404 and reply.data()["detail"]["code"] == "MODEL_NOT_FOUND"
