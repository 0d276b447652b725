"""Checkpoint layouts: one safetensors file, sharded safetensors with an index, and pytorch_model.bin load the
same weights and give identical scores; incomplete or unsafe checkpoints are refused with a clear error."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForSequenceClassification

from sie import Reranker, UnsupportedModelError
from sie.hub import is_model_dir
from sie.models.checkpoint import SAFETENSORS, SAFETENSORS_INDEX, read_tensors, weight_files
from sie.testing import make_random_checkpoint, random_pairs

NON_WEIGHT_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def _copy_without_weights(source: Path, target: Path) -> Path:
    target.mkdir()
    for name in NON_WEIGHT_FILES:
        if (source / name).exists():
            shutil.copy(source / name, target / name)
    return target


@pytest.fixture(scope="module")
def layouts(tmp_path_factory) -> dict[str, Path]:
    """The same tiny XLM-R checkpoint in each of the three layouts, pytorch_model.bin in both of torch's formats."""
    root = tmp_path_factory.mktemp("layouts")
    single = make_random_checkpoint(root / "single", "xlm-roberta", seed=5)
    sharded = _copy_without_weights(single, root / "sharded")
    AutoModelForSequenceClassification.from_pretrained(single).save_pretrained(sharded, max_shard_size="40KB")
    pickled = _copy_without_weights(single, root / "bin")
    # transformers 5 writes only safetensors: an older checkpoint's .bin is a pickled state dict, in torch's zip
    # format since torch 1.6 and in its legacy format before (which torch cannot memory-map).
    torch.save(load_file(single / SAFETENSORS), pickled / "pytorch_model.bin")
    legacy = _copy_without_weights(single, root / "legacy-bin")
    torch.save(load_file(single / SAFETENSORS), legacy / "pytorch_model.bin", _use_new_zipfile_serialization=False)
    return {"single": single, "sharded": sharded, "bin": pickled, "legacy-bin": legacy}


def test_each_layout_is_recognised(layouts):
    assert [path.name for path in weight_files(layouts["single"])] == [SAFETENSORS]
    shards = weight_files(layouts["sharded"])
    assert len(shards) > 2 and all(path.name.startswith("model-0") for path in shards)
    assert not (layouts["sharded"] / SAFETENSORS).exists() and (layouts["sharded"] / SAFETENSORS_INDEX).exists()
    assert [path.name for path in weight_files(layouts["bin"])] == ["pytorch_model.bin"]
    assert [path.name for path in weight_files(layouts["legacy-bin"])] == ["pytorch_model.bin"]
    assert all(is_model_dir(path) for path in layouts.values())


def test_every_layout_reads_the_same_tensors_as_stored(layouts):
    stored = load_file(layouts["single"] / SAFETENSORS)
    for name, path in layouts.items():
        state = dict(read_tensors(path))
        assert state.keys() == stored.keys(), name
        for key, tensor in state.items():
            assert tensor.dtype == stored[key].dtype and torch.equal(tensor, stored[key]), (name, key)


def test_every_layout_gives_identical_scores(layouts, seed):
    pairs = random_pairs(seed, [0, 3, 17, 60, 200])
    scores = {name: Reranker(str(path), device="cpu", dtype=torch.float32).predict(pairs)
              for name, path in layouts.items()}
    for name in ("sharded", "bin", "legacy-bin"):
        np.testing.assert_array_equal(scores[name], scores["single"], err_msg=name)


def test_a_missing_shard_is_named(layouts, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(layouts["sharded"], broken)
    victim = weight_files(broken)[1]
    victim.unlink()
    with pytest.raises(UnsupportedModelError, match=f"missing: \\['{victim.name}'\\]"):
        Reranker(str(broken), device="cpu")


def test_a_folder_without_weights_is_not_a_model(layouts, tmp_path):
    empty = _copy_without_weights(layouts["single"], tmp_path / "empty")
    assert not is_model_dir(empty)
    with pytest.raises(UnsupportedModelError, match="holds no weights"):
        read_tensors(empty)


class _Payload:
    """Anything but tensors in a pickle could run code when loaded."""


def test_a_pickle_with_more_than_tensors_is_refused(layouts, tmp_path):
    unsafe = _copy_without_weights(layouts["single"], tmp_path / "unsafe")
    torch.save({"classifier.weight": _Payload()}, unsafe / "pytorch_model.bin")
    with pytest.raises(UnsupportedModelError, match="weights_only"):
        dict(read_tensors(unsafe))


@pytest.mark.parametrize("layout", ["single", "bin", "legacy-bin"])
def test_a_weight_file_cut_short_is_named(layouts, layout, tmp_path):
    broken = tmp_path / layout
    shutil.copytree(layouts[layout], broken)
    victim = weight_files(broken)[0]
    with open(victim, "r+b") as stream:
        stream.truncate(victim.stat().st_size // 2)
    with pytest.raises(UnsupportedModelError, match=f"{victim.name} is not a readable checkpoint file"):
        Reranker(str(broken), device="cpu")


def test_a_projection_missing_from_a_fused_group_is_named(layouts, tmp_path):
    partial = _copy_without_weights(layouts["single"], tmp_path / "partial")
    tensors = load_file(layouts["single"] / SAFETENSORS)
    value = next(key for key in tensors if key.endswith("layer.0.attention.self.value.weight"))
    del tensors[value]
    save_file(tensors, partial / SAFETENSORS)
    with pytest.raises(UnsupportedModelError, match=r"layer\.0\..*: expected query, key, value, got key, query$"):
        Reranker(str(partial), device="cpu")


@pytest.mark.parametrize("edit", ["two-label head", "config vocabulary"])
def test_a_tensor_of_another_shape_than_the_config_says_is_named(layouts, edit, tmp_path):
    """A classifier head with two rows under a one-label config, or a config whose vocab_size is not the
    checkpoint's: UnsupportedModelError naming the folder and the tensor, not load_state_dict's RuntimeError."""
    broken = tmp_path / "broken"
    shutil.copytree(layouts["single"], broken)
    if edit == "two-label head":
        tensors = load_file(broken / SAFETENSORS)
        key = next(key for key in tensors if key.endswith("out_proj.weight"))
        tensors[key] = torch.cat([tensors[key], tensors[key]])
        save_file(tensors, broken / SAFETENSORS)
    else:
        config = json.loads((broken / "config.json").read_text())
        config["vocab_size"] += 7
        (broken / "config.json").write_text(json.dumps(config))
    expected = "out_proj.weight \\(2, " if edit == "two-label head" else "word_embeddings.weight .*expected"
    with pytest.raises(UnsupportedModelError,
                       match=f"checkpoint in {broken} does not match its config.json.*{expected}"):
        Reranker(str(broken), device="cpu")


@pytest.mark.parametrize("removed", [("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"),
                                     ("tokenizer.json",)])
def test_a_folder_without_tokenizer_files_is_refused(layouts, removed, tmp_path):
    """transformers 5 builds an empty-vocabulary tokenizer for such a folder: every word would be <unk>, scored
    without an error."""
    broken = tmp_path / "broken"
    shutil.copytree(layouts["single"], broken)
    for name in removed:
        (broken / name).unlink(missing_ok=True)
    with pytest.raises(UnsupportedModelError, match=f"{broken} holds no tokenizer: none of tokenizer.json"):
        Reranker(str(broken), device="cpu")


def test_an_unreadable_tokenizer_file_is_named(layouts, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(layouts["single"], broken)
    (broken / "tokenizer.json").write_text("{not json")
    with pytest.raises(UnsupportedModelError, match=f"the tokenizer in {broken} cannot be read.*JSONDecodeError"):
        Reranker(str(broken), device="cpu")
    # JSON that tokenizers cannot read (a model type from a newer version): its bare Exception, named too.
    written = json.loads((layouts["single"] / "tokenizer.json").read_text())
    written["model"]["type"] = "FutureModel"
    (broken / "tokenizer.json").write_text(json.dumps(written))
    with pytest.raises(UnsupportedModelError, match=f"the tokenizer in {broken} cannot be read"):
        Reranker(str(broken), device="cpu")


def test_a_tokenizer_with_ids_past_the_vocabulary_is_refused_when_loading(layouts, tmp_path):
    """Another model's tokenizer: its ids would index past the embedding table at the first request (an IndexError
    on the CPU, a device-side assert that poisons the process's CUDA context on a GPU)."""
    broken = tmp_path / "broken"
    shutil.copytree(layouts["single"], broken)
    config = json.loads((broken / "config.json").read_text())
    config["vocab_size"] = 40
    (broken / "config.json").write_text(json.dumps(config))
    tensors = load_file(broken / SAFETENSORS)
    key = next(key for key in tensors if key.endswith("word_embeddings.weight"))
    tensors[key] = tensors[key][:40].clone()
    save_file(tensors, broken / SAFETENSORS)
    with pytest.raises(UnsupportedModelError, match=f"the tokenizer in {broken} does not match the model: it gives "
                                                    r"ids up to \d+, .* has 40"):
        Reranker(str(broken), device="cpu")


def test_a_config_field_of_the_wrong_type_is_named(layouts, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(layouts["single"], broken)
    config = json.loads((broken / "config.json").read_text())
    config["num_hidden_layers"] = None
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsupportedModelError, match=f"{broken / 'config.json'} cannot be read.*num_hidden_layers"):
        Reranker(str(broken), device="cpu")


def test_a_weight_file_that_may_not_be_read_is_named_as_such(layouts, tmp_path):
    """safetensors answers "No such file or directory" for a file that exists but may not be read."""
    broken = tmp_path / "broken"
    shutil.copytree(layouts["single"], broken)
    (broken / SAFETENSORS).chmod(0)
    if os.access(broken / SAFETENSORS, os.R_OK):
        pytest.skip("this user reads files whatever their permissions (root)")
    with pytest.raises(UnsupportedModelError, match=f"{broken / SAFETENSORS} cannot be read \\(Permission denied\\)"):
        Reranker(str(broken), device="cpu")
