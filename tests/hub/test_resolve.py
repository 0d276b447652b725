"""Model resolution and the errors for models sie cannot find or run."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from sie import ModelNotFoundError, Reranker, UnsupportedModelError
from sie.hub import local_models, resolve_model


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
