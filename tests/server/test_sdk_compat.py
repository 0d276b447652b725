"""Published clients against our server: sie-sdk 0.10.1 runs the guide's score examples (sdk_examples.py),
scores a decoder reranker with an instruction (sdk_decoder_examples.py) and runs the guide's standard pattern,
encode then score, with every encode output (sdk_encode_examples.py); Cohere's Python client (v1 and v2)
reranks through /v1/rerank and /v2/rerank (cohere_examples.py); OpenAI's client embeds through /v1/embeddings
(openai_examples.py); the guide's curl example gets JSON back, and so does a curl to TEI's /embed.

sie-sdk needs Python >= 3.12; the clients' virtual environment is built once and cached under
``~/.cache/sie/sdk-venv-0.10.1`` (``SIE_SDK_VENV`` overrides). Without a Python >= 3.12 the tests skip
with a message, unless ``SIE_REQUIRE_SDK_TEST=1`` (CI), where they fail instead.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from sie import DEFAULT_MODEL, Encoder, Reranker
from sie.inputs import scores_from_logits
from sie.testing import make_random_checkpoint
from sie.testing.embedders import make_random_embedder
from sie.testing.server import ServerProcess
from tests.server.conftest import TINY_BERT

SDK_VERSION = "0.10.1"
CLIENTS = {"sie-sdk": SDK_VERSION, "cohere": "7.3.1", "openai": "3.51.0"}
EXAMPLES = Path(__file__).with_name("sdk_examples.py")
DECODER_EXAMPLES = Path(__file__).with_name("sdk_decoder_examples.py")
TINY_QWEN3 = "test/tiny-qwen3"
COHERE_EXAMPLES = Path(__file__).with_name("cohere_examples.py")
ENCODE_EXAMPLES = Path(__file__).with_name("sdk_encode_examples.py")
OPENAI_EXAMPLES = Path(__file__).with_name("openai_examples.py")
TINY_M3 = "test/tiny-bge-m3"


def _unavailable(reason: str) -> None:
    if os.environ.get("SIE_REQUIRE_SDK_TEST") == "1":
        pytest.fail(f"{reason} (SIE_REQUIRE_SDK_TEST=1 makes this a failure)")
    pytest.skip(reason)


def _is_312(python: str) -> bool:
    try:
        done = subprocess.run([python, "-c", "import sys; print(sys.version_info >= (3, 12))"],
                              capture_output=True, text=True, timeout=60)
    except OSError:
        return False
    return done.returncode == 0 and done.stdout.strip() == "True"


def find_python312() -> str | None:
    """An interpreter >= 3.12: this one, one on PATH, or one pyenv has installed."""
    if sys.version_info >= (3, 12):
        return sys.executable
    for name in ("python3.14", "python3.13", "python3.12"):
        found = shutil.which(name)
        if found and _is_312(found):
            return found
    pyenv = shutil.which("pyenv")
    if pyenv:
        versions = subprocess.run([pyenv, "versions", "--bare"], capture_output=True, text=True).stdout.split()
        for version in sorted(versions, key=lambda v: [int(p) for p in re.findall(r"\d+", v)], reverse=True):
            prefix = subprocess.run([pyenv, "prefix", version], capture_output=True, text=True).stdout.strip()
            candidate = Path(prefix) / "bin" / "python"
            if prefix and candidate.exists() and _is_312(str(candidate)):
                return str(candidate)
    return None


@pytest.fixture(scope="module")
def clients_python() -> str:
    """The cached venv's interpreter with the CLIENTS installed, built on first use."""
    venv = Path(os.environ.get("SIE_SDK_VENV", Path.home() / ".cache" / "sie" / f"sdk-venv-{SDK_VERSION}"))
    python = venv / "bin" / "python"
    check = "import importlib.metadata as m; " + "; ".join(
        f"assert m.version({name!r}) == {version!r}" for name, version in CLIENTS.items())
    if python.exists() and subprocess.run([python, "-c", check], capture_output=True).returncode == 0:
        return str(python)
    base = find_python312()
    if base is None:
        _unavailable("sie-sdk needs Python >= 3.12 and none was found (PATH, pyenv)")
    venv.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=venv.name + ".", dir=venv.parent))
    try:
        subprocess.run([base, "-m", "venv", staging], check=True, capture_output=True, timeout=300)
        requirements = [f"{name}=={version}" for name, version in CLIENTS.items()]
        installed = subprocess.run([staging / "bin" / "python", "-m", "pip", "install", "--quiet", *requirements],
                                   capture_output=True, text=True, timeout=600)
        if installed.returncode != 0:
            _unavailable(f"pip install {' '.join(requirements)} failed:\n{installed.stderr[-2000:]}")
        # Built aside and renamed into place, so an interrupted build never looks complete. Only bin/python
        # is used, and it finds its packages relative to itself, whatever the folder's name.
        shutil.rmtree(venv, ignore_errors=True)
        staging.rename(venv)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return str(python)


@pytest.fixture(scope="module")
def default_server(default_model_path) -> Iterator[ServerProcess]:
    """The default model, admitting one waiting request so that the client meets 503 QUEUE_FULL."""
    with ServerProcess(["--device", "cpu", "--model", DEFAULT_MODEL, "--max-queue", "1"],
                       env={"HF_HUB_OFFLINE": "1"}) as server:
        yield server


def _run(python: str, script: Path, *args: str) -> dict:
    done = subprocess.run([python, script, *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": ""})
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout)


def test_sie_sdk_runs_the_guide_examples(clients_python, default_server):
    out = _run(clients_python, EXAMPLES, default_server.url, DEFAULT_MODEL)

    basic = out["basic"]
    assert basic["model"] == DEFAULT_MODEL
    assert sorted(entry["item_id"] for entry in basic["scores"]) == ["item-0", "item-1", "item-2"]
    assert basic["scores"][-1]["item_id"] == "item-1", "the weather sentence must rank last"
    for result in (basic, out["ids"], out["stage2"]["result"]):
        scores = [entry["score"] for entry in result["scores"]]
        assert scores == sorted(scores, reverse=True) and all(0 < score < 1 for score in scores)
        assert [entry["rank"] for entry in result["scores"]] == list(range(len(scores)))

    ids = out["ids"]
    assert ids["query_id"] == "q1"
    assert [entry["item_id"] for entry in ids["scores"]][-1] == "doc-2"
    assert sorted(entry["item_id"] for entry in ids["scores"]) == ["doc-1", "doc-2", "doc-3"]
    relevant = {f"doc-{i}" for i in range(0, 100, 7)}
    assert set(out["stage2"]["top_10_ids"]) <= relevant

    assert DEFAULT_MODEL in out["models"]["listed"]
    assert out["models"]["one"]["name"] == DEFAULT_MODEL and out["models"]["one"]["loaded"]

    errors = out["errors"]
    assert errors["unknown_option"]["type"] == "RequestError" and errors["unknown_option"]["status"] == 400
    assert "beam" in errors["unknown_option"]["message"]
    assert errors["too_long"]["type"] == "InputTooLongError" and errors["too_long"]["status"] == 400
    assert errors["guide_model_not_installed"]["status"] == 404
    assert errors["guide_model_not_installed"]["code"] == "MODEL_NOT_FOUND"
    assert DEFAULT_MODEL in errors["guide_model_not_installed"]["message"]
    assert errors["too_many_items"]["status"] == 413 and errors["too_many_items"]["type"] == "RequestError"
    assert errors["bad_item"]["status"] == 400 and "items[1].text" in errors["bad_item"]["message"]

    queue_full = out["queue_full"]
    assert queue_full["retries"], f"the client never met 503 QUEUE_FULL: {queue_full}"
    assert queue_full["result"]["scores"][0]["item_id"] == "item-0"
    metrics = default_server.client.get("/metrics").body.decode()
    assert re.search(r'sie_requests_total\{endpoint="/v1/score/<path:model>",status="503"[^}]*\} [1-9]', metrics)
    assert out["skew_warnings"] == []


@pytest.fixture(scope="module")
def decoder_server(tmp_path_factory) -> Iterator[tuple[ServerProcess, Path]]:
    """A tiny random Qwen3 causal LM served through the qwen3-reranker recipe named by --recipe."""
    root = tmp_path_factory.mktemp("decoder-models")
    path = make_random_checkpoint(root / TINY_QWEN3, "qwen3", shape="tiny-gqa", seed=7)
    with ServerProcess(["--device", "cpu", "--model", TINY_QWEN3, "--recipe", f"{TINY_QWEN3}=qwen3-reranker"],
                       env={"SIE_MODELS_DIR": str(root), "HF_HUB_OFFLINE": "1"}) as server:
        yield server, path


def test_sie_sdk_scores_a_decoder_reranker_with_an_instruction(clients_python, decoder_server):
    server, path = decoder_server
    out = _run(clients_python, DECODER_EXAMPLES, server.url, TINY_QWEN3)
    reranker = Reranker(str(path), device="cpu", recipe="qwen3-reranker")
    query = {"id": "q1", "text": "what is python"}
    items = [{"id": "doc-1", "text": "python is a programming language"}, {"id": "doc-2", "text": "snakes are reptiles"},
             {"id": "doc-3", "text": "python was created by guido van rossum"}]
    scores = {}
    for name, instruction in (("default", None), ("snakes", "Find documents about snakes")):
        expected = reranker.score(query, items, instruction=instruction)
        result = out[name]
        assert result["query_id"] == "q1" and result["model"] == TINY_QWEN3
        assert [entry["item_id"] for entry in result["scores"]] == [entry["item_id"] for entry in expected["scores"]]
        np.testing.assert_allclose([entry["score"] for entry in result["scores"]],
                                   [entry["score"] for entry in expected["scores"]], rtol=0, atol=1e-6)
        scores[name] = {entry["item_id"]: entry["score"] for entry in result["scores"]}
    assert scores["snakes"] != pytest.approx(scores["default"], abs=1e-5), "the instruction did not reach the recipe"
    served = {model["name"]: model for model in server.client.get("/v1/models").data()["models"]}[TINY_QWEN3]
    assert served["recipe"] == "qwen3-reranker" and served["architecture"] == "Qwen3ForCausalLM"


def test_cohere_clients_rerank_through_the_compatible_endpoints(clients_python, server, tiny_reranker):
    documents = ["Python is a programming language.", "Snakes are reptiles.", "Python was created by Guido van Rossum."]
    out = _run(clients_python, COHERE_EXAMPLES, server.url, TINY_BERT)
    expected = scores_from_logits(tiny_reranker.logits(tiny_reranker.encode("What is Python?", documents)), False)
    order = np.argsort(-expected, kind="stable")
    for version, top_n in (("v1", 2), ("v2", 3)):
        results = out[version]
        assert [result["index"] for result in results] == order[:top_n].tolist()
        np.testing.assert_allclose([result["relevance_score"] for result in results], expected[order[:top_n]],
                                   atol=1e-6)
    assert [result["document"] for result in out["v1"]] == [documents[i] for i in order[:2]]
    assert out["unknown_model"] == {"type": "NotFoundError", "status": 404}


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_the_guides_curl_example(default_server):
    # The guide's command, with this server's port and the installed model in place of localhost:8080 and
    # BAAI/bge-reranker-v2-m3.
    done = subprocess.run(
        ["curl", "-sS", "-X", "POST", f"{default_server.url}/v1/score/{DEFAULT_MODEL}",
         "-H", "Content-Type: application/json",
         "-H", "Accept: application/json",
         "-d", """{
"query": {"text": "What is machine learning?"},
"items": [
{"text": "Machine learning uses algorithms to learn from data."},
{"text": "The weather is sunny today."}
]
}"""], capture_output=True, text=True, timeout=120, check=True)
    result = json.loads(done.stdout)
    assert result["model"] == DEFAULT_MODEL
    assert [entry["item_id"] for entry in result["scores"]] == ["item-0", "item-1"]
    assert result["scores"][0]["score"] > 0.5 > result["scores"][1]["score"]


@pytest.fixture(scope="module")
def encode_server(tmp_path_factory, default_model_path) -> Iterator[tuple[ServerProcess, Path]]:
    """The guide's pair of models: a bge-m3-shaped random embedder (XLM-R, CLS, dense + sparse + multivector) and the
    default cross-encoder (its real weights, linked into the models directory), both loaded at start-up."""
    root = tmp_path_factory.mktemp("encode-models")
    path = make_random_embedder(root / TINY_M3, "xlm-roberta", pooling="cls", m3_heads=True, seed=51,
                                max_seq_length=8192)
    (root / DEFAULT_MODEL).parent.mkdir(parents=True)
    (root / DEFAULT_MODEL).symlink_to(default_model_path, target_is_directory=True)
    with ServerProcess(["--device", "cpu", "--model", TINY_M3, "--model", DEFAULT_MODEL],
                       env={"SIE_MODELS_DIR": str(root), "HF_HUB_OFFLINE": "1"}) as server:
        yield server, path


def test_sie_sdk_runs_the_guides_standard_pattern_and_every_encode_output(clients_python, encode_server):
    server, path = encode_server
    out = _run(clients_python, ENCODE_EXAMPLES, server.url, TINY_M3, DEFAULT_MODEL)
    encoder = Encoder(str(path), device="cpu")

    guide = out["guide"]
    corpus = [f"Document {i}: machine learning learns patterns from data." if i % 4 == 0
              else f"Document {i}: a recipe for bread with flour, water and salt." for i in range(20)]
    query = encoder.embed(["What is machine learning?"], is_query=True)[0]["dense"]
    assert guide["query"]["dense"]["dtype"] == "<f4"
    np.testing.assert_allclose(guide["query"]["dense"]["values"], query, atol=1e-5)
    assert guide["document_ids"] == [f"doc-{i}" for i in range(20)]
    documents = np.stack([result["dense"] for result in encoder.embed(corpus)])
    np.testing.assert_allclose([doc["dense"]["values"] for doc in guide["documents"]], documents, atol=1e-5)
    assert len(guide["candidates"]) == 10
    # Stage 2 reads back exactly the candidates' ids, every relevant candidate ranked above every other.
    assert sorted(guide["top_10_ids"]) == sorted(f"doc-{i}" for i in guide["candidates"])
    relevant = [int(item_id.removeprefix("doc-")) % 4 == 0 for item_id in guide["top_10_ids"]]
    assert any(relevant) and not all(relevant), "the (fixed) candidates mix relevant and other documents"
    assert relevant == sorted(relevant, reverse=True), guide["scores"]

    outputs = out["outputs"]
    assert set(outputs["dense"]) == {"id", "dense", "model"} and outputs["dense"]["id"] == "x"
    assert outputs["sparse"]["sparse"]["dtypes"] == ["<i4", "<f4"] and "dense" not in outputs["sparse"]
    expected = encoder.embed(["python is a language", "rain in paris"],
                             output_types=["dense", "sparse", "multivector"])
    for got, want in zip(out["together"], expected, strict=True):
        np.testing.assert_allclose(got["dense"]["values"], want["dense"], atol=1e-5)
        np.testing.assert_allclose(got["multivector"]["values"], want["multivector"], atol=1e-5)
        assert got["sparse"]["indices"] == want["sparse"]["indices"].tolist()
    assert "id" not in out["together"][0] and out["together"][1]["id"] == "b"
    assert len(out["helpers"]["multivector"]) == len(expected[0]["multivector"])
    assert {dtype: result["dense"]["dtype"] for dtype, result in out["dtypes"].items()} == {
        "float32": "<f4", "float16": "<f2", "int8": "|i1", "uint8": "|u1", "binary": "|i1", "ubinary": "|u1"}
    instructed = encoder.embed(["python"], instruction="Represent: ")[0]["dense"]
    np.testing.assert_allclose(out["instruction"]["dense"]["values"], instructed, atol=1e-5)

    errors = out["errors"]
    assert errors["unknown_output"]["status"] == 400 and "params.output_types[0]" in errors["unknown_output"]["message"]
    assert errors["reranker_encodes"]["status"] == 400 and "/v1/score/" in errors["reranker_encodes"]["message"]
    assert errors["bad_item"]["status"] == 400 and "items[1].text" in errors["bad_item"]["message"]
    served = {model["name"]: model for model in server.client.get("/v1/models").data()["models"]}
    assert served[TINY_M3]["outputs"] == ["dense", "sparse", "multivector"] and served[DEFAULT_MODEL]["task"] == "score"


def test_openai_client_embeds_through_the_compatible_endpoint(clients_python, encode_server):
    server, path = encode_server
    out = _run(clients_python, OPENAI_EXAMPLES, server.url, TINY_M3)
    encoder = Encoder(str(path), device="cpu")
    expected = [result["dense"] for result in encoder.embed(["What is machine learning?", "rain in paris"])]
    assert out["default"]["model"] == TINY_M3 and out["default"]["indices"] == [0, 1]
    np.testing.assert_allclose(out["default"]["vectors"], expected, atol=1e-5)
    assert out["default"]["usage"]["prompt_tokens"] == encoder.tokenize(["What is machine learning?",
                                                                         "rain in paris"]).num_tokens
    np.testing.assert_allclose(out["float"], expected[:1], atol=1e-5)
    raw = encoder.embed(["What is machine learning?"], options={"normalize": False})[0]["dense"][:8]
    np.testing.assert_allclose(out["dimensions"], [raw / np.linalg.norm(raw)], atol=1e-5)
    assert out["unknown_model"] == {"type": "NotFoundError", "status": 404}


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_tei_embed_with_curl(encode_server):
    server, path = encode_server
    done = subprocess.run(
        ["curl", "-sS", "-X", "POST", f"{server.url}/embed", "-H", "Content-Type: application/json",
         "-d", '{"inputs": ["What is Deep Learning?", "rain in paris"]}'],
        capture_output=True, text=True, timeout=120, check=True)
    vectors = json.loads(done.stdout)
    expected = [result["dense"] for result in Encoder(str(path), device="cpu").embed(["What is Deep Learning?",
                                                                                       "rain in paris"])]
    np.testing.assert_allclose(vectors, expected, atol=1e-5)
