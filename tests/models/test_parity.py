"""Engine scores equal transformers' on the same checkpoint (fp32, CPU), on fresh random mixed-length pairs."""

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


@pytest.mark.parametrize("checkpoint", ["default_model_path", "minilm_cross_encoder_path", "random_xlm_roberta_path",
                                        "random_bert_path"])
@pytest.mark.parametrize("max_length", [None, 48])
def test_logits_match_transformers(checkpoint, max_length, seed, request):
    path = request.getfixturevalue(checkpoint)
    reranker = Reranker(str(path), device="cpu", dtype=torch.float32, max_length=max_length, max_batch_tokens=700)
    pairs = random_pairs(seed, DOCUMENT_WORDS)

    ours = reranker.predict(pairs, activation_fn=torch.nn.Identity())
    # transformers on one padded batch: the behaviour sie must reproduce without padding.
    expected = padded_logits(AutoModelForSequenceClassification.from_pretrained(path).eval(),
                             AutoTokenizer.from_pretrained(path), pairs, torch.device("cpu"), reranker.max_length,
                             batch_size=len(pairs))

    queries, documents = zip(*pairs, strict=True)
    assert reranker.encode(list(queries), list(documents)).lengths.max() == reranker.max_length, \
        "no pair reached truncation"
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-4)
