"""bge-m3's three outputs equal FlagEmbedding's BGEM3FlagModel on a random XLM-RoBERTa checkpoint with random
sparse_linear.pt and colbert_linear.pt: dense and multivector within 1e-4, sparse weights within 1e-4 on the same
token ids."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from FlagEmbedding import BGEM3FlagModel

from sie import Encoder, UnsupportedModelError
from sie.encoding.m3 import MULTIVECTOR_FILE, sparse_vectors
from sie.testing.embedders import make_random_embedder
from sie.testing.words import random_text

OUTPUTS = ["dense", "sparse", "multivector"]


@pytest.fixture(scope="module")
def m3_path(tmp_path_factory):
    """bge-m3's shape in miniature: XLMRobertaModel, CLS pooling + Normalize, both heads (multivector width 24)."""
    return make_random_embedder(tmp_path_factory.mktemp("m3") / "bge-m3", "xlm-roberta", pooling="cls",
                                m3_heads=True, multivector_dim=24, seed=21, max_seq_length=8192)


@pytest.fixture(scope="module")
def flag_model(m3_path):
    return BGEM3FlagModel(str(m3_path), use_fp16=False, devices="cpu", colbert_dim=24)


def test_outputs_match_flag_embedding(m3_path, flag_model, rng):
    # Word counts from one token to past the model's 512-token limit; a repeated word tests the max over repeats.
    texts = [random_text(rng, int(words)) for words in (1, 2, 5, 16, 40, 90, 200, 700)] + ["python python python"]
    encoder = Encoder(str(m3_path), device="cpu", dtype=torch.float32, max_batch_tokens=700)
    assert encoder.output_types == ("dense", "sparse", "multivector") and encoder.max_length == 512
    ours = encoder.embed(texts, output_types=OUTPUTS)
    expected = flag_model.encode(texts, return_dense=True, return_sparse=True, return_colbert_vecs=True,
                                 max_length=512)
    lengths = encoder.tokenize(texts).lengths
    assert lengths.max() == 512, "no text reached the limit"

    for index, result in enumerate(ours):
        np.testing.assert_allclose(result["dense"], expected["dense_vecs"][index], rtol=0, atol=1e-4)
        assert result["multivector"].shape == (lengths[index] - 1, 24)
        np.testing.assert_allclose(result["multivector"], expected["colbert_vecs"][index], rtol=0, atol=1e-4)
        weights = {int(token): float(weight) for token, weight in expected["lexical_weights"][index].items()}
        assert result["sparse"]["indices"].tolist() == sorted(weights), f"text {index}: other token ids"
        np.testing.assert_allclose(result["sparse"]["values"], [weights[token] for token in sorted(weights)],
                                   rtol=0, atol=1e-4)
        assert result["sparse"]["indices"].dtype == np.int32 and result["sparse"]["values"].dtype == np.float32


def test_each_output_alone_equals_the_same_output_computed_with_the_others(m3_path, rng):
    encoder = Encoder(str(m3_path), device="cpu", dtype=torch.float32)
    texts = [random_text(rng, int(words)) for words in rng.integers(1, 60, size=6)]
    together = encoder.embed(texts, output_types=OUTPUTS)
    for kind in OUTPUTS:
        alone = encoder.embed(texts, output_types=[kind])
        for joint, single in zip(together, alone, strict=True):
            assert list(single) == [kind]
            if kind == "sparse":
                np.testing.assert_array_equal(single[kind]["indices"], joint[kind]["indices"])
                np.testing.assert_allclose(single[kind]["values"], joint[kind]["values"], rtol=0, atol=1e-6)
            else:
                np.testing.assert_allclose(single[kind], joint[kind], rtol=0, atol=1e-6)


def test_special_tokens_never_carry_sparse_weight():
    ids = np.array([0, 7, 7, 2, 0, 9, 1, 2])  # two sequences: <s> 7 7 </s> | <s> 9 <pad> </s>
    weights = np.array([5.0, 0.5, 0.9, 4.0, 5.0, 0.0, 3.0, 4.0])
    vectors = sparse_vectors(ids, weights, np.array([4, 4]), excluded=[0, 1, 2], vocab_size=10)
    assert [indices.tolist() for indices, _ in vectors] == [[7], []]
    assert vectors[0][1].tolist() == pytest.approx([0.9])


def test_one_head_without_the_other_is_refused(m3_path, tmp_path):
    import shutil

    copy = shutil.copytree(m3_path, tmp_path / "half")
    (copy / MULTIVECTOR_FILE).unlink()
    with pytest.raises(UnsupportedModelError, match=MULTIVECTOR_FILE):
        Encoder(str(copy), device="cpu")
