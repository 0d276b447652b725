"""Engine scores equal transformers' on the same checkpoint (CPU), on fresh random mixed-length pairs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from sie import Reranker
from sie.testing import padded_logits
from sie.testing.words import random_pairs

# Document lengths in words: empty, one token, short, medium, and longer than any model's limit.
DOCUMENT_WORDS = (0, 1, 2, 7, 23, 61, 140, 300, 700)
# dtype -> atol on the logits. In float64 sie must compute what transformers computes: both round far below the
# float32 scores they return. float32, what users run, rounds differently from transformers' padded batch (matmul
# blocking follows the batch's shape), and a short pair amplifies it most: ('are snake', '') through the default
# model's 12 layers and pooler differed by 1.8e-4 (transformers' own float32 by up to 5.6e-5 from float64).
PRECISIONS = {torch.float64: 1e-5, torch.float32: 1e-3}


@pytest.mark.parametrize("checkpoint", ["default_model_path", "minilm_cross_encoder_path", "random_xlm_roberta_path",
                                        "random_bert_path"])
@pytest.mark.parametrize("max_length", [None, 48])
@pytest.mark.parametrize("dtype", PRECISIONS, ids=str)
def test_logits_match_transformers(checkpoint, max_length, dtype, seed, request):
    path = request.getfixturevalue(checkpoint)
    reranker = Reranker(str(path), device="cpu", dtype=dtype, max_length=max_length, max_batch_tokens=700)
    pairs = random_pairs(seed, DOCUMENT_WORDS)

    ours = reranker.predict(pairs, activation_fn=torch.nn.Identity())
    # transformers on one padded batch: the behaviour sie must reproduce without padding.
    expected = padded_logits(AutoModelForSequenceClassification.from_pretrained(path, dtype=dtype).eval(),
                             AutoTokenizer.from_pretrained(path), pairs, torch.device("cpu"), reranker.max_length,
                             batch_size=len(pairs))

    queries, documents = zip(*pairs, strict=True)
    assert reranker.encode(list(queries), list(documents)).lengths.max() == reranker.max_length, \
        "no pair reached truncation"
    np.testing.assert_allclose(ours, expected, rtol=0, atol=PRECISIONS[dtype])


def test_a_literal_padding_token_takes_no_position_as_in_transformers(random_xlm_roberta_path):
    """RoBERTa numbers positions by counting non-padding tokens, so a text holding ``<pad>`` (which the tokenizer
    reads as the padding token) shifts every later position; transformers does so on the same ids."""
    pairs = [("what <pad> is python", "python <pad><pad> is a programming language"),
             ("<pad> snakes", "a python is a snake <pad>"), ("what is python", "no padding token here")]
    reranker = Reranker(str(random_xlm_roberta_path), device="cpu", dtype=torch.float64)
    assert (reranker.encode(*map(list, zip(*pairs, strict=True))).input_ids == 1).sum() >= 4  # <pad> is id 1
    ours = reranker.predict(pairs, activation_fn=torch.nn.Identity())
    expected = padded_logits(AutoModelForSequenceClassification.from_pretrained(random_xlm_roberta_path,
                                                                                 dtype=torch.float64).eval(),
                             AutoTokenizer.from_pretrained(random_xlm_roberta_path), pairs, torch.device("cpu"),
                             reranker.max_length, batch_size=len(pairs))
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-9)
