"""Operations endpoints, model loading at start-up and on demand, and the metrics the batcher reports.

The endpoints' answers are checked in process; start-up (a worker that answers while it loads) and
``sie serve`` itself on real servers.
"""

from __future__ import annotations

import gc
import json
import threading
import time
import weakref

import pytest
import torch

from sie.reranker import default_dtype
from sie.testing.checkpoints import make_random_checkpoint
from sie.server.errors import QueueFullError
from sie.server.state import EXTENSION
from sie.testing.embedders import make_random_embedder
from tests.server.conftest import TINY_BERT, TINY_XLMR, tiny_server, wait_ready


def test_healthz_and_readyz_once_loaded(client):
    assert client.get("/healthz").data() == {"status": "ok"}
    assert client.get("/readyz").data() == {"status": "ready"}


def test_models_lists_loaded_and_installed_models(client):
    models = {model["name"]: model for model in client.get("/v1/models").data()["models"]}
    loaded = models[TINY_BERT]
    assert loaded["loaded"] and loaded["state"] == "loaded"
    # No --dtype: the engine's default for this CPU, bf16 where it has native bf16.
    expected_dtype = str(default_dtype(torch.device("cpu"))).removeprefix("torch.")
    assert loaded["max_sequence_length"] == 512 and loaded["device"] == "cpu" and loaded["dtype"] == expected_dtype
    assert set(loaded["backends"]) >= {"attention", "layer_norm", "gelu"}
    assert TINY_XLMR in models


def test_one_models_entry_answers_at_its_own_url(client):
    # sie-sdk's client.get_model(name) reads GET /v1/models/{name}.
    listed = {model["name"]: model for model in client.get("/v1/models").data()["models"]}
    assert client.get(f"/v1/models/{TINY_BERT}").data() == listed[TINY_BERT]
    missing = client.get("/v1/models/no/such-model")
    assert missing.status == 404 and missing.data()["detail"]["code"] == "MODEL_NOT_FOUND"
    assert TINY_BERT in missing.data()["detail"]["available"]


def test_readyz_is_503_until_the_models_are_loaded(tiny_models_dir):
    with tiny_server(tiny_models_dir, "--model", f"{TINY_BERT},{TINY_XLMR}").start(wait_ready=False) as booting:
        states = []
        while True:
            reply = booting.client.get("/readyz")
            states.append(reply.status)
            if reply.status == 200:
                break
            detail = reply.data()["detail"]
            assert reply.status == 503 and detail["code"] == "MODEL_LOADING" and reply.headers["retry-after"] == "2"
            assert detail["models"] and set(detail["models"]) <= {TINY_BERT, TINY_XLMR}
            assert detail["message"] == f"loading {', '.join(detail['models'])}"
            time.sleep(0.02)
        assert states[0] == 503, "the worker answered before loading finished: loading must not block it"
        score = booting.client.post(f"/v1/score/{TINY_XLMR}", {"query": "q", "items": ["a"]})
        assert score.status == 200


def test_a_model_that_fails_to_load_is_reported_not_retried(make_app, tiny_models_dir):
    broken = make_app(models=["test/missing"])
    ready = wait_ready(broken)
    assert ready.status == 503 and ready.data()["detail"]["code"] == "MODEL_LOAD_FAILED"
    assert ready.data()["detail"]["models"] == ["test/missing"] and "retry-after" not in ready.headers
    assert ready.data()["detail"]["message"].startswith("test/missing failed to load: ModelNotFoundError")
    reply = broken.post("/v1/score/test/missing", {"query": "q", "items": ["a"]})
    assert reply.status == 502 and reply.data()["detail"]["code"] == "MODEL_LOAD_FAILED"
    assert "ModelNotFoundError" in reply.data()["detail"]["message"]
    assert str(tiny_models_dir) not in reply.body.decode()
    models = {model["name"]: model for model in broken.get("/v1/models").data()["models"]}
    assert models["test/missing"]["state"] == "failed"


def test_a_damaged_checkpoint_is_named_without_the_servers_directories(make_app, tmp_path, monkeypatch):
    models_dir = tmp_path / "models"
    weights = make_random_checkpoint(models_dir / "test/damaged", "bert", seed=5) / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    monkeypatch.setenv("SIE_MODELS_DIR", str(models_dir))
    broken = make_app(models=["test/damaged"])
    ready = wait_ready(broken)
    assert ready.status == 503 and ready.data()["detail"]["code"] == "MODEL_LOAD_FAILED"
    reply = broken.post("/v1/score/test/damaged", {"query": "q", "items": ["a"]})
    assert reply.status == 502 and reply.data()["detail"]["code"] == "MODEL_LOAD_FAILED"
    message = reply.data()["detail"]["message"]
    failure = "UnsupportedModelError: model.safetensors is not a readable checkpoint file, cut short or damaged?"
    assert message.startswith(f"model 'test/damaged' failed to load: {failure}"), message
    models = {model["name"]: model for model in broken.get("/v1/models").data()["models"]}
    assert models["test/damaged"]["last_error"]["message"].startswith(failure)
    for shown in (ready.body, reply.body, broken.get("/v1/models").body):
        assert str(tmp_path) not in shown.decode()


def test_a_malformed_installed_config_leaves_the_model_list_to_the_others(make_app, tmp_path, monkeypatch):
    # The list reads each installed model's config for its task: one whose architectures is not a list of names
    # answered GET /v1/models with a 500 for every model (TypeError in task_of).
    models_dir = tmp_path / "models"
    make_random_checkpoint(models_dir / TINY_BERT, "bert", seed=3)
    config = make_random_checkpoint(models_dir / "test/odd", "bert", seed=5) / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "architectures": 5}))
    monkeypatch.setenv("SIE_MODELS_DIR", str(models_dir))
    served = make_app()
    assert wait_ready(served).status == 200
    reply = served.get("/v1/models")
    assert reply.status == 200, reply.body
    models = {model["name"]: model for model in reply.data()["models"]}
    assert models[TINY_BERT]["state"] == "loaded" and models["test/odd"]["state"] == "available"


@pytest.mark.parametrize("failing", ["reranker", "embedder"])
def test_requests_naming_no_model_report_the_model_of_their_task_that_failed(make_app, tmp_path, monkeypatch,
                                                                            failing):
    """A model of the other task first, one of the route's task that fails to load second: /rerank and /v1/rerank
    answered 400 INVALID_INPUT that the embedding model is not a reranker (a model the client never named), /embed
    and /v1/embeddings 400 "configure an embedding model", as if none were; each hid the failure."""
    models_dir = tmp_path / "models"
    make = {"reranker": make_random_checkpoint, "embedder": make_random_embedder}
    make["embedder" if failing == "reranker" else "reranker"](models_dir / "test/working", "bert", seed=42)
    weights = make[failing](models_dir / "test/damaged", "bert", seed=5) / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    monkeypatch.setenv("SIE_MODELS_DIR", str(models_dir))
    served = make_app(models=["test/working", "test/damaged"])
    assert wait_ready(served).data()["detail"]["code"] == "MODEL_LOAD_FAILED"

    def resolves_again(name):
        raise AssertionError(f"a request resolved {name} again (for a hub id, a download)")

    # The failed model's task is the failed load's: a request does not resolve the model to read it again.
    monkeypatch.setattr("sie.server.model_registry.model_task", resolves_again)
    routes = {"reranker": (("/rerank", {"query": "q", "texts": ["a"]}),
                           ("/v1/rerank", {"query": "q", "documents": ["a"]})),
              "embedder": (("/embed", {"inputs": "a"}), ("/v1/embeddings", {"input": "a"}))}
    for path, body in routes[failing]:
        reply = served.post(path, body, msgpack_in=False)
        assert reply.status == 502 and reply.data()["detail"]["code"] == "MODEL_LOAD_FAILED", (path, reply.body)
        assert "test/damaged" in reply.data()["detail"]["message"]


def _until_not_loading(client, method: str, path: str, body=None):
    deadline = time.monotonic() + 60
    while True:
        reply = client.post(path, body) if method == "POST" else client.get(path)
        if reply.status != 503 or reply.data()["detail"]["code"] != "MODEL_LOADING":
            return reply
        assert time.monotonic() < deadline, "the model never finished loading"
        time.sleep(0.02)


def test_a_model_that_failed_to_load_loads_again_once_its_folder_changed(make_app, tmp_path, monkeypatch):
    """A model copied into the models folder is seen before its weights are all there: its load fails. It answered
    502 until the server restarted; once the copy finishes, the next request (or readiness probe) loads it."""
    models_dir = tmp_path / "models"
    weights = make_random_checkpoint(models_dir / "test/copied", "bert", seed=5) / "model.safetensors"
    whole = weights.read_bytes()
    weights.write_bytes(whole[: len(whole) // 2])
    monkeypatch.setenv("SIE_MODELS_DIR", str(models_dir))
    path, body = "/v1/score/test/copied", {"query": "q", "items": ["a"]}
    served = make_app(models=["test/copied"])
    assert wait_ready(served).data()["detail"]["code"] == "MODEL_LOAD_FAILED"
    assert served.post(path, body).status == 502 and served.post(path, body).status == 502, "no retry, unchanged"
    weights.write_bytes(whole)
    assert _until_not_loading(served, "GET", "/readyz").status == 200
    assert served.post(path, body).status == 200
    later_weights = make_random_checkpoint(models_dir / "test/later", "bert", seed=6) / "model.safetensors"
    later_whole = later_weights.read_bytes()
    later_weights.write_bytes(later_whole[: len(later_whole) // 2])
    on_demand = make_app(models=["test/copied"])
    later = "/v1/score/test/later"  # installed, not configured: loaded when asked for
    assert _until_not_loading(on_demand, "POST", later, body).status == 502
    later_weights.write_bytes(later_whole)
    assert _until_not_loading(on_demand, "POST", later, body).status == 200


ON_DEMAND_BODY = {"query": "what", "items": ["python", "rain"]}


def limited_app(make_app, tmp_path, monkeypatch, limit: int, names=("first", "second", "third")):
    """A ready app with --max-on-demand-models ``limit``, configured with ``test/pinned``, whose models folder also
    holds ``test/<name>`` for each of ``names`` (random BERT checkpoints, loaded on demand); and its registry."""
    models_dir = tmp_path / "models"
    for seed, name in enumerate(["pinned", *names]):
        make_random_checkpoint(models_dir / f"test/{name}", "bert", seed=5 + seed)
    monkeypatch.setenv("SIE_MODELS_DIR", str(models_dir))
    served = make_app(models=["test/pinned"], max_on_demand_models=limit)
    assert wait_ready(served).status == 200
    return served, served.app.extensions[EXTENSION].registry


def test_past_max_on_demand_models_the_least_recently_used_is_unloaded(make_app, tmp_path, monkeypatch):
    """Every installed model asked for stayed loaded, so a worker serving a folder of many models grew until the OS
    killed it. With --max-on-demand-models 1, loading a second one unloads the first, freeing it; the configured
    model stays; the unloaded one loads again when asked for, with the same scores."""
    served, registry = limited_app(make_app, tmp_path, monkeypatch, 1, names=("first", "second"))
    body = ON_DEMAND_BODY

    def states() -> dict[str, str]:
        return {model["name"]: model["state"] for model in served.get("/v1/models").data()["models"]}

    first = _until_not_loading(served, "POST", "/v1/score/test/first", body)
    assert first.status == 200
    first_model = weakref.ref(registry.get("test/first").reranker)
    assert _until_not_loading(served, "POST", "/v1/score/test/second", body).status == 200
    assert states() == {"test/pinned": "loaded", "test/first": "available", "test/second": "loaded"}
    gc.collect()
    assert first_model() is None, "the unloaded model is still held: its memory is not freed"
    assert 'model="test/first"' not in served.get("/metrics").body.decode().split("sie_queue_depth", 1)[1]

    again = _until_not_loading(served, "POST", "/v1/score/test/first", body)
    assert again.status == 200 and again.data()["scores"] == first.data()["scores"]
    assert states() == {"test/pinned": "loaded", "test/first": "loaded", "test/second": "available"}


def test_models_asked_for_at_once_still_end_within_max_on_demand_models(make_app, tmp_path, monkeypatch):
    """Three models asked for at once each made room before any of the others had loaded (only loaded models are
    unloaded), so all three stayed loaded with --max-on-demand-models 1, and no later load ever came to unload them."""
    served, _ = limited_app(make_app, tmp_path, monkeypatch, 1)
    body = ON_DEMAND_BODY
    paths = [f"/v1/score/test/{name}" for name in ["first", "second", "third"]]
    assert [served.post(path, body).data()["detail"]["code"] for path in paths] == ["MODEL_LOADING"] * 3
    for path in paths:
        _until_not_loading(served, "POST", path, body)

    loaded = [model["name"] for model in served.get("/v1/models").data()["models"] if model["state"] == "loaded"]
    assert len(loaded) == 2 and "test/pinned" in loaded, loaded


def test_a_request_that_reaches_a_model_as_it_is_unloaded_is_not_told_the_server_is_shutting_down(make_app, tmp_path,
                                                                                                monkeypatch):
    """A request that looked its model up just before --max-on-demand-models unloaded it got 503 QUEUE_FULL 'the
    server is shutting down' from the stopped batcher, on a server that was not."""
    served, registry = limited_app(make_app, tmp_path, monkeypatch, 1, names=("first", "second"))
    body = ON_DEMAND_BODY
    assert _until_not_loading(served, "POST", "/v1/score/test/first", body).status == 200
    looked_up = registry.get("test/first")
    assert _until_not_loading(served, "POST", "/v1/score/test/second", body).status == 200

    with pytest.raises(QueueFullError) as refused:
        looked_up.batcher.slot()
    assert "shutting down" not in str(refused.value) and "test/first" in str(refused.value)


def test_a_model_loaded_again_while_its_unload_drains_keeps_its_queue_depth_gauge(make_app, tmp_path, monkeypatch):
    """An unload dropped the model's queue-depth gauge only once its queued requests had run: when the model loaded
    again meanwhile, that dropped the new gauge, and /metrics left out a loaded model for good."""
    served, registry = limited_app(make_app, tmp_path, monkeypatch, 2)
    body = ON_DEMAND_BODY
    assert _until_not_loading(served, "POST", "/v1/score/test/first", body).status == 200
    batcher = registry.get("test/first").batcher
    assert _until_not_loading(served, "POST", "/v1/score/test/third", body).status == 200
    draining, drained = threading.Event(), threading.Event()

    def slow_close(*args, **kwargs):  # the first model's queue takes a while to run
        draining.set()
        drained.wait(30)
        type(batcher).close(batcher, *args, **kwargs)

    monkeypatch.setattr(batcher, "close", slow_close)
    assert served.post("/v1/score/test/second", body).status == 503  # unloads the first, which drains
    assert draining.wait(30)
    assert _until_not_loading(served, "POST", "/v1/score/test/first", body).status == 200  # unloads the third
    drained.set()
    assert _until_not_loading(served, "POST", "/v1/score/test/second", body).status == 200

    gauges = served.get("/metrics").body.decode().split("sie_queue_depth", 1)[1]
    assert 'model="test/first"' in gauges and 'model="test/third"' not in gauges


def test_a_locally_installed_model_loads_on_demand(client):
    path = f"/v1/score/{TINY_XLMR}"
    body = {"query": "what", "items": ["python", "rain"]}
    first = client.post(path, body)
    if first.status == 503:  # the usual case; another test may have loaded it already
        assert first.data()["detail"]["code"] == "MODEL_LOADING" and first.headers["retry-after"]
        deadline = time.monotonic() + 60
        while (reply := client.post(path, body)).status == 503 and time.monotonic() < deadline:
            time.sleep(0.05)
    else:
        reply = first
    assert reply.status == 200 and reply.data()["model"] == TINY_XLMR


def test_metrics_report_requests_phases_batches_and_queue(client):
    client.post(f"/v1/score/{TINY_BERT}", {"query": "q", "items": ["a", "b"]})
    text = client.get("/metrics").body.decode()
    assert 'sie_requests_total{endpoint="/v1/score/<path:model>",status="200"' in text
    for phase in ("tokenize", "queue", "inference", "total"):
        assert f'sie_request_phase_seconds_count{{phase="{phase}"' in text
    for histogram in ("sie_batch_requests", "sie_batch_pairs", "sie_batch_tokens"):
        assert f'{histogram}_count{{model="{TINY_BERT}"' in text
    assert f'sie_queue_depth{{model="{TINY_BERT}"' in text


def test_cli_serve_starts_the_server(tiny_models_dir):
    import sys

    with tiny_server(tiny_models_dir, command=(sys.executable, "-m", "sie.cli", "serve")) as via_cli:
        assert via_cli.client.post(f"/v1/score/{TINY_BERT}", {"query": "q", "items": ["a"]}).status == 200


@pytest.mark.parametrize(("flag", "value", "message"), [("--port", "eighty", "SIE_PORT (--port)"),
                                                        ("--dtype", "float8", "SIE_DTYPE (--dtype)")])
def test_bad_settings_stop_sie_serve_with_a_message(flag, value, message):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "sie.cli", "serve", flag, value], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and message in done.stderr


def test_a_model_served_by_its_absolute_path_answers_at_its_url(make_app, tiny_models_dir):
    folder = str(tiny_models_dir / TINY_BERT)  # sie-sdk puts the name in the URL as it is: "//" after /v1/score
    by_path = make_app(models=[folder])
    assert wait_ready(by_path).status == 200
    reply = by_path.post(f"/v1/score/{folder}", {"query": "q", "items": ["a"]})
    assert reply.status == 200 and reply.data()["model"] == folder
    assert by_path.post(f"/v1/score/{TINY_BERT}", {"query": "q", "items": ["a"]}).status != 308
