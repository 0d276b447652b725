"""The model registry: what it holds, how a config finds its family, and what it refuses."""

from __future__ import annotations

import pytest
from transformers import BertConfig, DebertaV2Config, ModernBertConfig, Qwen3Config, XLMRobertaConfig

from sie import UnsupportedModelError
from sie.models import FAMILIES, family_of, supported_architectures, task_of
from sie.models import bert, modernbert, qwen3, xlm_roberta


def test_each_architecture_name_belongs_to_one_family_per_task():
    names = [(name, family.task) for family in FAMILIES for name in family.architectures]
    assert len(names) == len(set(names))
    assert supported_architectures() == sorted({name for name, _ in names})
    # Qwen3-Reranker and Qwen3-Embedding both name the causal LM; no other name is shared.
    shared = {name for name, task in names if task == "score"} & {name for name, task in names if task == "encode"}
    assert shared == {"Qwen3ForCausalLM"}
    assert [family.name for family in FAMILIES] == ["bert", "xlm-roberta", "qwen2", "qwen2-classifier", "qwen3",
                                                    "qwen3-classifier", "modernbert", "bert-encoder",
                                                    "xlm-roberta-encoder", "modernbert-encoder", "qwen3-encoder"]
    assert [family.name for family in FAMILIES if family.prompted] == ["qwen2", "qwen2-classifier", "qwen3",
                                                                       "qwen3-classifier"]
    assert [family.name for family in FAMILIES if family.task == "encode"] == [
        "bert-encoder", "xlm-roberta-encoder", "modernbert-encoder", "qwen3-encoder"]
    assert {family.task for family in FAMILIES} == {"score", "encode"}


@pytest.mark.parametrize(("architecture", "family"), [
    ("BertForSequenceClassification", bert.FAMILY),
    ("XLMRobertaForSequenceClassification", xlm_roberta.FAMILY),
    ("RobertaForSequenceClassification", xlm_roberta.FAMILY),
])
def test_a_config_finds_its_family_by_architecture_name(architecture, family):
    config = XLMRobertaConfig(num_labels=1) if "Roberta" in architecture else BertConfig(num_labels=1)
    config.architectures = [architecture]
    assert family_of(config) is family


@pytest.mark.parametrize(("architecture", "family"), [
    ("BertModel", bert.ENCODER),
    ("XLMRobertaModel", xlm_roberta.ENCODER),
    ("RobertaModel", xlm_roberta.ENCODER),
    ("ModernBertModel", modernbert.ENCODER),
])
def test_an_embedding_model_finds_its_body_for_encoding(architecture, family):
    config = {"Bert": BertConfig, "XLMR": XLMRobertaConfig, "Robe": XLMRobertaConfig,
              "Mode": ModernBertConfig}[architecture[:4]](architectures=[architecture])
    assert family_of(config, task="encode") is family and task_of([architecture]) == "encode"


def test_a_checkpoint_of_the_other_task_is_sent_where_it_runs():
    with pytest.raises(UnsupportedModelError, match=r"XLMRobertaModel is an embedding model; .*sie\.Encoder"):
        family_of(XLMRobertaConfig(architectures=["XLMRobertaModel"]))
    with pytest.raises(UnsupportedModelError, match=r"a reranker; .*sie\.Reranker"):
        family_of(BertConfig(architectures=["BertForSequenceClassification"], num_labels=1), task="encode")
    assert task_of(["BertForSequenceClassification"]) == "score" and task_of(["Unknown"]) is None


@pytest.mark.parametrize("architecture", ["Qwen3ForCausalLM", "Qwen3Model"])
def test_qwen3_embedding_finds_its_body_for_encoding(architecture):
    config = Qwen3Config(architectures=[architecture])
    assert family_of(config, task="encode") is qwen3.ENCODER


def test_a_name_both_tasks_run_is_told_apart_by_the_folder():
    """Qwen3ForCausalLM is Qwen3-Reranker's and Qwen3-Embedding's: a sentence-transformers folder is the latter."""
    config = Qwen3Config(architectures=["Qwen3ForCausalLM"])
    assert family_of(config) is qwen3.CAUSAL_LM and family_of(config, task="encode") is qwen3.ENCODER
    assert task_of(["Qwen3ForCausalLM"]) == "score"
    assert task_of(["Qwen3ForCausalLM"], sentence_transformers=True) == "encode"
    # A name of one task stays that task's, whatever the folder.
    assert task_of(["BertForSequenceClassification"], sentence_transformers=True) == "score"
    assert task_of(["Qwen3Model"]) == "encode"
    for architecture in ("Qwen2ForCausalLM", "Qwen3ForSequenceClassification"):
        with pytest.raises(UnsupportedModelError, match=rf"{architecture} is a reranker; .*sie\.Reranker"):
            family_of(Qwen3Config(architectures=[architecture], num_labels=1), task="encode")
    with pytest.raises(UnsupportedModelError, match=r"Qwen3Model is an embedding model; .*sie\.Encoder"):
        family_of(Qwen3Config(architectures=["Qwen3Model"]))


def test_a_config_naming_a_body_and_a_head_finds_the_family_of_the_task_asked_for():
    config = BertConfig(architectures=["BertModel", "BertForSequenceClassification"], num_labels=1)
    assert family_of(config).task == "score" and family_of(config, task="encode").task == "encode"


def test_an_unknown_architecture_is_refused_naming_every_supported_one():
    config = DebertaV2Config(num_labels=1, architectures=["DebertaV2ForSequenceClassification"])
    with pytest.raises(UnsupportedModelError, match="DebertaV2ForSequenceClassification") as error:
        family_of(config)
    assert all(name in str(error.value) for name in supported_architectures("score"))
    named = set(str(error.value).replace(",", " ").split())
    encode_only = set(supported_architectures("encode")) - set(supported_architectures("score"))
    assert not named & encode_only, "embedding bodies are no answer for scoring"


def test_modernbert_refuses_what_its_module_does_not_implement():
    config = ModernBertConfig(num_labels=1, architectures=["ModernBertForSequenceClassification"])
    assert family_of(config) is modernbert.FAMILY
    for change, message in (({"hidden_activation": "silu"}, "hidden_activation 'silu'"),
                            ({"classifier_activation": "gelu_new"}, "classifier_activation 'gelu_new'"),
                            ({"num_labels": 2}, "2 labels")):
        broken = ModernBertConfig(architectures=["ModernBertForSequenceClassification"], **{"num_labels": 1, **change})
        with pytest.raises(UnsupportedModelError, match=message):
            family_of(broken)
    assert modernbert.FAMILY.max_length(config) == 8192


@pytest.mark.parametrize(("change", "message"), [
    ({"num_labels": 3}, "3 labels"),
    ({"position_embedding_type": "relative_key"}, "position_embedding_type 'relative_key'"),
    ({"hidden_act": "gelu_new"}, "hidden_act 'gelu_new'"),
])
def test_a_family_refuses_configs_its_module_does_not_implement(change, message):
    config = BertConfig(architectures=["BertForSequenceClassification"], num_labels=1)
    for key, value in change.items():
        setattr(config, key, value)
    with pytest.raises(UnsupportedModelError, match=message):
        family_of(config)


def test_max_length_rules():
    assert bert.FAMILY.max_length(BertConfig(max_position_embeddings=2048)) == 512
    assert bert.FAMILY.max_length(BertConfig(max_position_embeddings=128)) == 128
    # XLM-R's positions start at padding_idx + 1: 514 entries hold 512 tokens.
    assert xlm_roberta.FAMILY.max_length(XLMRobertaConfig(max_position_embeddings=514, pad_token_id=1)) == 512
