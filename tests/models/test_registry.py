"""The model registry: what it holds, how a config finds its family, and what it refuses."""

from __future__ import annotations

import pytest
from transformers import BertConfig, ModernBertConfig, XLMRobertaConfig

from sie import UnsupportedModelError
from sie.models import FAMILIES, family_of, supported_architectures
from sie.models import bert, xlm_roberta


def test_each_architecture_name_belongs_to_one_family():
    names = [name for family in FAMILIES for name in family.architectures]
    assert len(names) == len(set(names))
    assert supported_architectures() == sorted(names)
    assert [family.name for family in FAMILIES] == ["bert", "xlm-roberta", "qwen2", "qwen2-classifier", "qwen3",
                                                    "qwen3-classifier"]
    assert [family.name for family in FAMILIES if family.prompted] == ["qwen2", "qwen2-classifier", "qwen3",
                                                                       "qwen3-classifier"]


@pytest.mark.parametrize(("architecture", "family"), [
    ("BertForSequenceClassification", bert.FAMILY),
    ("XLMRobertaForSequenceClassification", xlm_roberta.FAMILY),
    ("RobertaForSequenceClassification", xlm_roberta.FAMILY),
])
def test_a_config_finds_its_family_by_architecture_name(architecture, family):
    config = XLMRobertaConfig(num_labels=1) if "Roberta" in architecture else BertConfig(num_labels=1)
    config.architectures = [architecture]
    assert family_of(config) is family


def test_an_unknown_architecture_is_refused_naming_every_supported_one():
    config = ModernBertConfig(num_labels=1, architectures=["ModernBertForSequenceClassification"])
    with pytest.raises(UnsupportedModelError, match="ModernBertForSequenceClassification") as error:
        family_of(config)
    assert all(name in str(error.value) for name in supported_architectures())


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
