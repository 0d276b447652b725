"""Engine scores equal transformers' on the same checkpoint (fp32, CPU), on fresh random mixed-length pairs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from sie import Reranker
from tests.words import random_text

# Document lengths in words: empty, one token, short, medium, and longer than any model's limit.
DOCUMENT_WORDS = (0, 1, 2, 7, 23, 61, 140, 300, 700)


def reference_logits(path, queries: list[str], documents: list[str], max_length: int) -> np.ndarray:
    """transformers on a padded batch: the behaviour sie must reproduce without padding."""
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    inputs = tokenizer(queries, documents, truncation="only_second", max_length=max_length, padding=True,
                       return_tensors="pt", return_token_type_ids=True)
    with torch.no_grad():
        return model(**inputs).logits[:, 0].numpy()


def random_pairs(seed: int) -> tuple[list[str], list[str]]:
    rng = np.random.default_rng(seed)
    documents = [random_text(rng, words) for words in rng.permutation(DOCUMENT_WORDS)]
    queries = [random_text(rng, int(rng.integers(1, 12))) for _ in documents]
    return queries, documents


@pytest.fixture
def seed() -> int:
    return int(np.random.SeedSequence().entropy % 2**32)


@pytest.mark.parametrize("checkpoint", ["default_model_path", "minilm_cross_encoder_path", "random_xlm_roberta_path",
                                        "random_bert_path"])
@pytest.mark.parametrize("max_length", [None, 48])
def test_logits_match_transformers(checkpoint, max_length, seed, request):
    path = request.getfixturevalue(checkpoint)
    reranker = Reranker(str(path), device="cpu", dtype=torch.float32, max_length=max_length, max_batch_tokens=700)
    queries, documents = random_pairs(seed)

    ours = reranker.predict(list(zip(queries, documents)), activation_fn=torch.nn.Identity())
    expected = reference_logits(path, queries, documents, reranker.max_length)

    assert reranker.encode(queries, documents).lengths.max() == reranker.max_length, "no pair reached truncation"
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-4, err_msg=f"seed {seed}")
