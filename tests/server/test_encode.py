"""The encode endpoints in process: sie's POST /v1/encode/{model} (the contract's msgpack-numpy arrays, JSON for
curl, ids echoed, every output type and dtype), TEI's /embed, OpenAI's /v1/embeddings, the error table for bad
input, /v1/models, and cross-request batching with mixed output types (sie-sdk and the openai client meet these
endpoints on a real server in test_sdk_compat.py)."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgpack
import numpy as np
import pytest
from flask import Flask

from sie import Encoder
from sie.server import create_app
from sie.server.state import EXTENSION
from sie.encoding.params import ENCODE_OPTIONS
from sie.testing import make_random_checkpoint
from sie.testing.embedders import make_random_embedder
from sie.testing.words import random_text
from tests.server.conftest import TINY_BERT, AppClient, wait_ready

TINY_M3 = "test/tiny-m3"
TINY_EMBEDDER = "test/tiny-embedder"
PROMPTS = {"query": "query: ", "document": "passage: "}
ALL_OUTPUTS = ["dense", "sparse", "multivector"]


@pytest.fixture(scope="module")
def encode_models_dir(tmp_path_factory) -> Any:
    """A reranker and two embedding models: bge-m3-shaped (XLM-R, CLS, three outputs) and a BERT with prompts and
    no Normalize module."""
    root = tmp_path_factory.mktemp("encode-models")
    make_random_checkpoint(root / TINY_BERT, "bert", seed=3)
    make_random_embedder(root / TINY_M3, "xlm-roberta", pooling="cls", m3_heads=True, multivector_dim=24, seed=41,
                         max_seq_length=96)
    make_random_embedder(root / TINY_EMBEDDER, "bert", pooling="mean", normalize=False, prompts=PROMPTS, seed=42,
                         max_seq_length=64)
    return root


@pytest.fixture(scope="module")
def encode_app(encode_models_dir) -> Iterator[Flask]:
    """The reranker first, then the embedding models: the defaults of the rerank and embed endpoints differ."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SIE_MODELS_DIR", str(encode_models_dir))
        application = create_app({"models": [TINY_BERT, TINY_M3, TINY_EMBEDDER], "device": "cpu", "max_items": 50})
        ready = wait_ready(AppClient(application))
    try:
        assert ready.status == 200, ready.body
        yield application
    finally:
        application.extensions[EXTENSION].registry.close()


@pytest.fixture
def client(encode_app, encode_models_dir, monkeypatch) -> AppClient:
    monkeypatch.setenv("SIE_MODELS_DIR", str(encode_models_dir))
    return AppClient(encode_app)


@pytest.fixture(scope="module")
def m3(encode_models_dir) -> Encoder:
    return Encoder(str(encode_models_dir / TINY_M3), device="cpu")


@pytest.fixture(scope="module")
def embedder(encode_models_dir) -> Encoder:
    return Encoder(str(encode_models_dir / TINY_EMBEDDER), device="cpu")


def array(value: dict[bytes, Any]) -> np.ndarray:
    """A msgpack-numpy map as sie-sdk 0.10.1 decodes it (its checks included)."""
    assert set(value) == {b"nd", b"type", b"kind", b"shape", b"data"} and value[b"nd"] is True
    assert value[b"kind"] == b"" and isinstance(value[b"type"], str)
    dtype = np.dtype(value[b"type"])
    assert int(np.prod(value[b"shape"])) * dtype.itemsize == len(value[b"data"])
    return np.frombuffer(value[b"data"], dtype=dtype).reshape(value[b"shape"])


def test_encode_returns_every_output_as_numpy_maps_with_ids_echoed(client, m3, rng):
    texts = [random_text(rng, int(words)) for words in (3, 20, 1, 60)]
    items = [{"id": "a", "text": texts[0]}, {"text": texts[1]}, {"id": "c", "text": texts[2], "metadata": {"k": 1}},
             {"id": "d", "text": texts[3]}]
    reply = client.post(f"/v1/encode/{TINY_M3}", {"items": items, "params": {"output_types": ALL_OUTPUTS}})
    assert reply.status == 200, reply.body
    assert reply.headers["content-type"] == "application/msgpack"
    body = msgpack.unpackb(reply.body, raw=False)
    assert body["model"] == TINY_M3 and len(body["items"]) == 4
    expected = m3.embed(texts, output_types=ALL_OUTPUTS)
    assert body["usage"]["input_tokens"] == m3.tokenize(texts).num_tokens
    for item, result, want in zip(items, body["items"], expected, strict=True):
        assert result.get("id") == item.get("id")
        dense, multivector = array(result["dense"]["values"]), array(result["multivector"]["values"])
        assert dense.dtype == np.float32 and dense.shape == (32,) and multivector.shape[1] == 24
        np.testing.assert_allclose(dense, want["dense"], atol=1e-6)
        np.testing.assert_allclose(multivector, want["multivector"], atol=1e-6)
        indices, values = array(result["sparse"]["indices"]), array(result["sparse"]["values"])
        assert indices.dtype == np.int32 and values.dtype == np.float32
        np.testing.assert_array_equal(indices, want["sparse"]["indices"])
        np.testing.assert_allclose(values, want["sparse"]["values"], atol=1e-6)


@pytest.mark.parametrize(("path", "body"), [
    ("/embed", {"inputs": ["a", "b"], "dimensions": 0}),
    ("/v1/embeddings", {"input": ["a", "b"], "model": TINY_EMBEDDER, "dimensions": 10_000}),
])
def test_a_bad_dimensions_is_refused_before_any_work_is_queued(client, encode_app, monkeypatch, path, body):
    def never(encoded):
        raise AssertionError("the batch ran for a request that was bound to fail")

    for model in (TINY_M3, TINY_EMBEDDER):  # /embed's is the first configured embedding model
        monkeypatch.setattr(encode_app.extensions[EXTENSION].registry.get(model).batcher, "_run", never)
    reply = client.post(path, body, msgpack_in=False)
    assert reply.status == 400 and reply.data()["detail"]["param"] == "dimensions"


def test_json_for_curl_and_dense_by_default(client, embedder):
    reply = client.post(f"/v1/encode/{TINY_EMBEDDER}", {"items": [{"text": "what is python"}]}, msgpack_in=False,
                        accept="application/json")
    assert reply.status == 200 and reply.headers["content-type"] == "application/json"
    (item,) = reply.data()["items"]
    assert set(item) == {"dense"}
    np.testing.assert_allclose(item["dense"]["values"], embedder.embed(["what is python"])[0]["dense"], atol=1e-6)


@pytest.mark.parametrize(("output_dtype", "wire_type", "width"), [
    ("float32", "<f4", 32), ("float16", "<f2", 32), ("int8", "|i1", 32), ("uint8", "|u1", 32),
    ("binary", "|i1", 4), ("ubinary", "|u1", 4),
])
def test_output_dtypes_on_the_wire(client, m3, output_dtype, wire_type, width):
    params = {"output_types": ["dense", "multivector"], "output_dtype": output_dtype}
    result = client.post(f"/v1/encode/{TINY_M3}", {"items": ["python is a language"], "params": params}).data()
    dense, multivector = result["items"][0]["dense"]["values"], result["items"][0]["multivector"]["values"]
    assert dense[b"type"] == wire_type and dense[b"shape"] == [width]
    assert multivector[b"type"] == wire_type
    expected = m3.embed(["python is a language"], output_types=["dense", "multivector"], output_dtype=output_dtype)[0]
    np.testing.assert_array_equal(array(dense), expected["dense"])
    np.testing.assert_array_equal(array(multivector), expected["multivector"])


def test_a_null_option_is_its_default(client):
    """truncate, like the other options, means its default when null (it was refused: "must be a boolean")."""
    plain = client.post(f"/v1/encode/{TINY_EMBEDDER}", {"items": ["rain in paris"]}).data()
    params = {"options": dict.fromkeys(ENCODE_OPTIONS)}
    reply = client.post(f"/v1/encode/{TINY_EMBEDDER}", {"items": ["rain in paris"], "params": params})
    assert reply.status == 200, reply.body
    assert reply.data()["items"] == plain["items"]


def test_is_query_and_instruction_pick_the_prompt(client, embedder):
    for options, params in (({"is_query": True}, {"options": {"is_query": True}}),
                            ({"is_query": False}, {"options": {"is_query": False}}),
                            ({"instruction": "Represent: "}, {"instruction": "Represent: "}),
                            ({}, {"options": {"profile": "default"}})):
        result = client.post(f"/v1/encode/{TINY_EMBEDDER}", {"items": ["rain in paris"], "params": params}).data()
        expected = embedder.embed(["rain in paris"], **options)[0]["dense"]
        np.testing.assert_allclose(array(result["items"][0]["dense"]["values"]), expected, atol=1e-6)
    plain = embedder.embed(["rain in paris"])[0]["dense"]
    assert not np.allclose(embedder.embed(["rain in paris"], is_query=True)[0]["dense"], plain, atol=1e-4)


BAD = [
    # path, body, status, code, param
    (f"/v1/encode/{TINY_M3}", {"items": []}, 400, "INVALID_INPUT", "items"),
    (f"/v1/encode/{TINY_M3}", {"params": {}}, 400, "INVALID_INPUT", "items"),
    (f"/v1/encode/{TINY_M3}", {"items": ["a", {"text": 5}]}, 400, "INVALID_INPUT", "items[1].text"),
    (f"/v1/encode/{TINY_M3}", {"items": ["a"], "params": {"output_types": ["dense", "colbert"]}}, 400,
     "INVALID_INPUT", "params.output_types[1]"),
    (f"/v1/encode/{TINY_EMBEDDER}", {"items": ["a"], "params": {"output_types": ["sparse"]}}, 400,
     "INVALID_INPUT", "params.output_types[0]"),
    (f"/v1/encode/{TINY_M3}", {"items": ["a"], "params": {"output_dtype": "int4"}}, 400, "INVALID_INPUT",
     "params.output_dtype"),
    (f"/v1/encode/{TINY_M3}", {"items": ["a"], "params": {"options": {"beam": 2}}}, 400, "INVALID_INPUT",
     "params.options"),
    (f"/v1/encode/{TINY_M3}", {"items": ["a"], "params": {"options": {"profile": "sparse"}}}, 400, "INVALID_INPUT",
     "params.options.profile"),
    (f"/v1/encode/{TINY_M3}", {"items": ["a"], "params": {"options": {"max_length": 4096}}}, 400,
     "INVALID_INPUT", "params.options.max_length"),
    (f"/v1/encode/{TINY_M3}", {"items": ["a", "long " * 200], "params": {"options": {"truncate": False}}}, 400,
     "INPUT_TOO_LONG", "items[1]"),
    (f"/v1/encode/{TINY_M3}", {"items": ["a"] * 51}, 413, "TOO_MANY_ITEMS", None),
    ("/v1/encode/test/not-installed", {"items": ["a"]}, 404, "MODEL_NOT_FOUND", None),
    (f"/v1/encode/{TINY_BERT}", {"items": ["a"]}, 400, "INVALID_INPUT", "model"),
    (f"/v1/score/{TINY_M3}", {"query": "q", "items": ["a"]}, 400, "INVALID_INPUT", "model"),
    ("/embed", {"inputs": []}, 400, "INVALID_INPUT", "inputs"),
    ("/embed", {"inputs": ["a", 7]}, 400, "INVALID_INPUT", "inputs[1]"),
    ("/embed", {"inputs": "a", "prompt_name": "nope"}, 400, "INVALID_INPUT", "prompt_name"),
    ("/embed", {"inputs": "a", "dimensions": 33}, 400, "INVALID_INPUT", "dimensions"),
    ("/v1/embeddings", {"input": [[1, 2, 3]]}, 400, "INVALID_INPUT", "input[0]"),
    ("/v1/embeddings", {"input": "a", "encoding_format": "hex"}, 400, "INVALID_INPUT", "encoding_format"),
    ("/v1/embeddings", {"model": TINY_BERT, "input": "a"}, 400, "INVALID_INPUT", "model"),
    ("/v1/embeddings", {"model": 0, "input": "a"}, 400, "INVALID_INPUT", "model"),
    ("/v1/embeddings", {"input": "a", "encoding_format": False}, 400, "INVALID_INPUT", "encoding_format"),
    ("/embed", {"inputs": "a", "prompt_name": 3}, 400, "INVALID_INPUT", "prompt_name"),
]


@pytest.mark.parametrize(("path", "body", "status", "code", "param"), BAD,
                         ids=[f"{path} {param or code}" for path, _, _, code, param in BAD])
def test_bad_requests_get_the_error_table_naming_the_field(client, path, body, status, code, param):
    reply = client.post(path, body)
    assert reply.status == status, reply.body
    detail = reply.data()["detail"]
    assert detail["code"] == code and reply.headers["x-sie-error-code"] == code
    assert detail.get("param") == param, detail


def test_a_reranker_is_sent_to_the_encode_route_and_back(client):
    detail = client.post(f"/v1/score/{TINY_M3}", {"query": "q", "items": ["a"]}).data()["detail"]
    assert f"POST /v1/encode/{TINY_M3}" in detail["message"]
    detail = client.post(f"/v1/encode/{TINY_BERT}", {"items": ["a"]}).data()["detail"]
    assert f"POST /v1/score/{TINY_BERT}" in detail["message"]


def test_tei_embed_uses_the_first_model_that_encodes(client, m3, rng):
    texts = [random_text(rng, 5), random_text(rng, 30)]
    vectors = client.post("/embed", {"inputs": texts}, msgpack_in=False).data()
    expected = [result["dense"] for result in m3.embed(texts)]
    np.testing.assert_allclose(vectors, expected, atol=1e-6)
    (one,) = client.post("/embed", {"inputs": texts[0], "normalize": False}, msgpack_in=False).data()
    raw = m3.embed([texts[0]], options={"normalize": False})[0]["dense"]
    np.testing.assert_allclose(one, raw, atol=1e-6)
    (short,) = client.post("/embed", {"inputs": texts[0], "dimensions": 8}, msgpack_in=False).data()
    np.testing.assert_allclose(short, raw[:8] / np.linalg.norm(raw[:8]), atol=1e-6)
    # The rerank endpoints still answer with the first model that scores.
    assert client.post("/rerank", {"query": "q", "texts": ["a", "b"]}, msgpack_in=False).status == 200


def test_openai_embeddings_in_float_and_base64_with_unit_length(client, embedder, rng):
    """OpenAI's vectors, and TEI's OpenAI route's, have unit length: the model's own (here none) does not matter,
    nor whether ``dimensions`` cuts them (the full width gave a unit vector, no ``dimensions`` the raw one)."""
    texts = [random_text(rng, 4), random_text(rng, 17)]
    raw = [result["dense"] for result in embedder.embed(texts)]
    assert all(abs(np.linalg.norm(vector) - 1) > 1e-3 for vector in raw), "the model itself does not normalise"
    expected = [vector / np.linalg.norm(vector) for vector in raw]
    floats = client.post("/v1/embeddings", {"model": TINY_EMBEDDER, "input": texts}, msgpack_in=False).data()
    assert floats["object"] == "list" and floats["model"] == TINY_EMBEDDER
    assert floats["usage"]["prompt_tokens"] == floats["usage"]["total_tokens"] == embedder.tokenize(texts).num_tokens
    assert [entry["index"] for entry in floats["data"]] == [0, 1]
    np.testing.assert_allclose([entry["embedding"] for entry in floats["data"]], expected, atol=1e-6)
    packed = client.post("/v1/embeddings", {"model": TINY_EMBEDDER, "input": texts[1], "encoding_format": "base64"},
                         msgpack_in=False).data()
    decoded = np.frombuffer(base64.b64decode(packed["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(decoded, expected[1], atol=1e-6)
    for width in (embedder.dimensions["dense"], 8):
        cut = client.post("/v1/embeddings", {"model": TINY_EMBEDDER, "input": texts[0], "dimensions": width},
                          msgpack_in=False).data()["data"][0]["embedding"]
        np.testing.assert_allclose(cut, raw[0][:width] / np.linalg.norm(raw[0][:width]), atol=1e-6)


def test_an_encode_request_whose_vectors_pass_the_response_bound_gets_413_before_it_runs(encode_models_dir, m3, rng):
    """A multivector output is a row per token: a body well within its limit could ask for gigabytes. The bound
    counts float32 values (dense: a width per item, multivector: a width per token, sparse: two per token); the
    same texts within it, or asking less of them, are answered."""
    texts = [random_text(rng, 60) for _ in range(4)]
    tokens = m3.tokenize(texts).num_tokens
    dense, multivector = m3.dimensions["dense"], m3.dimensions["multivector"]
    wanted = 4 * (len(texts) * dense + tokens * multivector)  # dense and multivector, in bytes
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SIE_MODELS_DIR", str(encode_models_dir))
        application = create_app({"models": [TINY_M3], "device": "cpu", "max_response_bytes": wanted - 1})
        try:
            client = AppClient(application)
            assert wait_ready(client).status == 200
            both = {"items": [{"text": text} for text in texts], "params": {"output_types": ["dense", "multivector"]}}
            refused = client.post(f"/v1/encode/{TINY_M3}", both, msgpack_in=False, accept="application/json")
            detail = refused.data()["detail"]
            assert refused.status == 413 and detail["code"] == "RESPONSE_TOO_LARGE"
            assert (f"dense: {len(texts) * dense:,}, multivector: {tokens * multivector:,} values for 4 items of "
                    f"{tokens:,} tokens), more than this server's --max-response-bytes") in detail["message"]
            dense_only = {"items": both["items"], "params": {"output_types": ["dense"]}}
            answered = client.post(f"/v1/encode/{TINY_M3}", dense_only, msgpack_in=False, accept="application/json")
            assert answered.status == 200 and len(answered.data()["items"]) == 4
            assert client.post(f"/v1/encode/{TINY_M3}", {**both, "items": both["items"][:1]}, msgpack_in=False,
                               accept="application/json").status == 200
        finally:
            application.extensions[EXTENSION].registry.close()


def test_models_say_which_score_and_which_encode(client):
    models = {model["name"]: model for model in client.get("/v1/models").data()["models"]}
    assert models[TINY_BERT]["task"] == "score" and models[TINY_BERT]["outputs"] == ["score"]
    assert models[TINY_M3]["task"] == "encode" and models[TINY_M3]["outputs"] == ALL_OUTPUTS
    assert models[TINY_M3]["dims"] == {"dense": 32, "sparse": models[TINY_M3]["dims"]["sparse"], "multivector": 24}
    assert models[TINY_M3]["architecture"] == "XLMRobertaModel" and models[TINY_M3]["max_sequence_length"] == 96
    assert models[TINY_EMBEDDER]["dims"] == {"dense": 32} and models[TINY_EMBEDDER]["prompts"] == ["document", "query"]


def test_concurrent_requests_with_mixed_outputs_share_batches_and_get_their_own(client, m3, rng):
    requests = []
    for index in range(60):
        texts = [random_text(rng, int(words)) for words in rng.integers(1, 50, size=int(rng.integers(1, 6)))]
        outputs = [kind for kind in ALL_OUTPUTS if rng.random() < 0.5] or ["dense"]
        requests.append(([{"id": f"r{index}-{i}", "text": text} for i, text in enumerate(texts)], outputs))

    def send(request):
        items, outputs = request
        reply = client.post(f"/v1/encode/{TINY_M3}", {"items": items, "params": {"output_types": outputs}})
        assert reply.status == 200, reply.body
        return reply.data()

    metrics_before = client.get("/metrics").body.decode()
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(send, requests))
    for (items, outputs), answer in zip(requests, answers, strict=True):
        expected = m3.embed([item["text"] for item in items], output_types=outputs)
        for item, result, want in zip(items, answer["items"], expected, strict=True):
            assert result["id"] == item["id"] and sorted(k for k in result if k != "id") == sorted(outputs)
            if "dense" in outputs:
                np.testing.assert_allclose(array(result["dense"]["values"]), want["dense"], atol=1e-5)
            if "multivector" in outputs:
                np.testing.assert_allclose(array(result["multivector"]["values"]), want["multivector"], atol=1e-5)
            if "sparse" in outputs:
                np.testing.assert_array_equal(array(result["sparse"]["indices"]), want["sparse"]["indices"])
    assert _multi_request_batches(client.get("/metrics").body.decode()) > _multi_request_batches(metrics_before)


def _multi_request_batches(metrics: str) -> int:
    """Batches of more than one request for the m3 model so far."""
    def value(pattern: str) -> float:
        found = re.search(pattern, metrics)
        return float(found.group(1)) if found else 0.0

    count = value(rf'sie_batch_requests_count{{model="{TINY_M3}"[^}}]*}} (\S+)')
    single = value(rf'sie_batch_requests_bucket{{le="1.0",model="{TINY_M3}"[^}}]*}} (\S+)')
    return int(count - single)


def test_qwen3_embedding_and_qwen3_reranker_are_each_served_by_their_route(tmp_path, rng):
    """Both name Qwen3ForCausalLM: the sentence-transformers folder is served as an embedding model, the other as
    a reranker, and each route sends the other's requests where they belong."""
    embedding, reranker = "test/tiny-qwen3-embedding", "test/tiny-qwen3-reranker"
    make_random_embedder(tmp_path / embedding, "qwen3", shape="tiny-gqa", pooling="lasttoken", seed=43,
                         prompts={"query": "Instruct: find it\nQuery:", "document": ""}, max_seq_length=64)
    make_random_checkpoint(tmp_path / reranker, "qwen3", shape="tiny-gqa", seed=44)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SIE_MODELS_DIR", str(tmp_path))
        application = create_app({"models": [reranker, embedding], "device": "cpu",
                                  "recipes": f"{reranker}=qwen3-reranker"})
        try:
            client = AppClient(application)
            assert wait_ready(client).status == 200
            models = {model["name"]: model for model in client.get("/v1/models").data()["models"]}
            assert models[embedding]["task"] == "encode" and models[embedding]["architecture"] == "Qwen3ForCausalLM"
            assert models[reranker]["task"] == "score"
            texts = [random_text(rng, 3), random_text(rng, 20)]
            reply = client.post(f"/v1/encode/{embedding}", {"items": [{"text": text} for text in texts],
                                                              "params": {"options": {"is_query": True}}})
            assert reply.status == 200, reply.body
            expected = Encoder(str(tmp_path / embedding), device="cpu").encode_query(texts)
            np.testing.assert_allclose([array(item["dense"]["values"]) for item in reply.data()["items"]], expected,
                                       atol=1e-6)
            assert client.post(f"/v1/score/{reranker}", {"query": "q", "items": ["a", "b"]}).status == 200
            detail = client.post(f"/v1/score/{embedding}", {"query": "q", "items": ["a"]}).data()["detail"]
            assert f"POST /v1/encode/{embedding}" in detail["message"]
            detail = client.post(f"/v1/encode/{reranker}", {"items": ["a"]}).data()["detail"]
            assert f"POST /v1/score/{reranker}" in detail["message"]
        finally:
            application.extensions[EXTENSION].registry.close()
