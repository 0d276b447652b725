"""Model resolution and the errors for models sie cannot find or run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from sie import ModelNotFoundError, Reranker, UnsupportedModelError
from sie.hub import folder_state, local_models, resolve_model


def test_missing_model_names_every_place_looked_at(tmp_path, monkeypatch):
    monkeypatch.setenv("SIE_MODELS_DIR", str(tmp_path))
    with pytest.raises(ModelNotFoundError) as error:
        resolve_model("nobody/no-such-reranker")
    message = str(error.value)
    assert "nobody/no-such-reranker" in message
    assert str(tmp_path / "nobody" / "no-such-reranker") in message
    assert "Hugging Face cache" in message and "Hugging Face Hub" in message
    with pytest.raises(ModelNotFoundError, match="path"):
        resolve_model(str(tmp_path / "absent"))


def test_models_directory_and_explicit_paths_resolve(tmp_path, monkeypatch, random_bert_path):
    monkeypatch.setenv("SIE_MODELS_DIR", str(tmp_path))
    shutil.copytree(random_bert_path, tmp_path / "acme" / "tiny-reranker")
    assert resolve_model("acme/tiny-reranker") == tmp_path / "acme" / "tiny-reranker"
    assert resolve_model(str(random_bert_path)) == random_bert_path
    assert local_models() == ["acme/tiny-reranker"]


def test_folder_state_reads_a_path_as_resolve_model_does(tmp_path, monkeypatch):
    # "~/..." was looked for literally (no state: a failed load never retried), and "./x" in the models directory.
    home, models = tmp_path / "home", tmp_path / "models"
    (home / "x").mkdir(parents=True)
    (home / "x" / "config.json").write_text("{}")
    (models / "x").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("SIE_MODELS_DIR", str(models))
    monkeypatch.chdir(home)
    assert folder_state("~/x") == (("config.json", 2, (home / "x" / "config.json").stat().st_mtime_ns),)
    assert folder_state("./x") == folder_state("~/x")
    assert folder_state("x") == ()  # a name: the models directory's folder
    assert folder_state("absent") is None
    assert folder_state("~nobody-by-this-name/x") is None  # expanduser raises: the model's load says why


def test_folder_state_of_a_folder_that_cannot_be_searched_is_none(tmp_path, monkeypatch):
    # It runs before a model's load, outside its error handling: raising there left the model loading for ever and
    # stopped the loader thread before the next configured model.
    def no_search(path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setenv("SIE_MODELS_DIR", str(tmp_path))
    monkeypatch.setattr(Path, "is_dir", no_search)
    assert folder_state("org/model") is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"architectures": ["GPT2LMHeadModel"]}, "not supported; sie runs BertForSequenceClassification"),
        ({"num_labels": 3, "id2label": {"0": "a", "1": "b", "2": "c"}}, "3 labels"),
        ({"position_embedding_type": "relative_key"}, "position_embedding_type 'relative_key' is not supported"),
    ],
)
def test_unsupported_checkpoints_raise_clear_errors(tmp_path, random_bert_path, change, message):
    checkpoint = shutil.copytree(random_bert_path, tmp_path / "model")
    config = json.loads((checkpoint / "config.json").read_text())
    config.update(change)
    (checkpoint / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsupportedModelError, match=message):
        Reranker(str(checkpoint), device="cpu", dtype=torch.float32)


def test_a_symlinked_model_folder_is_listed_and_resolved(tmp_path, monkeypatch, random_bert_path):
    monkeypatch.setenv("SIE_MODELS_DIR", str(tmp_path / "models"))
    (tmp_path / "models" / "acme").mkdir(parents=True)
    (tmp_path / "models" / "acme" / "linked").symlink_to(random_bert_path, target_is_directory=True)
    assert local_models() == ["acme/linked"]
    assert resolve_model("acme/linked") == tmp_path / "models" / "acme" / "linked"


def test_a_link_back_to_a_folder_on_the_way_lists_each_model_once(tmp_path, monkeypatch, random_bert_path):
    """Cycles (``acme/up -> ..``; ``a/to_b -> ../b`` with ``b/to_a -> ../a``) are not walked round: each model once
    per way to it, beside a symlinked model that is listed."""
    models = tmp_path / "models"
    monkeypatch.setenv("SIE_MODELS_DIR", str(models))
    shutil.copytree(random_bert_path, models / "acme" / "tiny")
    (models / "acme" / "up").symlink_to("..", target_is_directory=True)
    (models / "alias").symlink_to(models / "acme" / "tiny", target_is_directory=True)
    assert local_models() == ["acme/tiny", "alias"]
    for name in ("a", "b"):
        shutil.copytree(random_bert_path, models / name / "m")
    (models / "a" / "to_b").symlink_to("../b", target_is_directory=True)
    (models / "b" / "to_a").symlink_to("../a", target_is_directory=True)
    assert local_models() == ["a/m", "a/to_b/m", "acme/tiny", "alias", "b/m", "b/to_a/m"]


def test_a_folder_that_is_not_a_model_says_what_it_lacks(tmp_path, monkeypatch, random_bert_path):
    monkeypatch.setenv("SIE_MODELS_DIR", str(tmp_path / "models"))
    bare = tmp_path / "bare"
    bare.mkdir()
    with pytest.raises(ModelNotFoundError, match="a folder without config.json"):
        resolve_model(str(bare))
    shutil.copy(random_bert_path / "config.json", bare / "config.json")
    with pytest.raises(ModelNotFoundError, match="a folder without weights: none of model.safetensors"):
        resolve_model(str(bare))


@pytest.mark.parametrize(("config", "message"), [
    ("{not json", "config.json cannot be read by transformers"),
    ('{"model_type": "no-such-model", "architectures": ["BertForSequenceClassification"]}',
     "config.json cannot be read by transformers"),
    ('{"model_type": "bert"}', "the config names no architectures"),
])
def test_a_config_transformers_cannot_read_or_that_names_no_architecture_is_refused(tmp_path, random_bert_path,
                                                                                    config, message):
    checkpoint = shutil.copytree(random_bert_path, tmp_path / "model")
    (checkpoint / "config.json").write_text(config)
    with pytest.raises(UnsupportedModelError, match=message):
        Reranker(str(checkpoint), device="cpu", dtype=torch.float32)
