"""Overlapped tokenization: chunks tokenized on a second thread while the previous chunk runs give the scores,
tokens and errors of the plain path."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from sie import InputTooLongError, Reranker
from sie.reranker import PIPELINE_PAIRS
from sie.testing import random_text


@pytest.fixture(scope="module")
def rerankers(random_bert_path):
    return {overlap: Reranker(str(random_bert_path), device="cpu", dtype=torch.float32, max_length=64,
                              overlap_tokenization=overlap) for overlap in (False, True)}


def test_chunks_tokenized_ahead_score_like_the_plain_path(rerankers, rng):
    count = 2 * PIPELINE_PAIRS + 37
    queries = [random_text(rng, int(rng.integers(1, 6))) for _ in range(5)]
    pairs = [(queries[int(rng.integers(0, 5))], random_text(rng, int(n))) for n in rng.integers(0, 80, size=count)]
    threads = set()
    overlapped = rerankers[True]
    encode = overlapped.encode

    def recording_encode(*args, **kwargs):
        threads.add(threading.current_thread().name)
        return encode(*args, **kwargs)

    overlapped.encode = recording_encode
    try:
        ours = overlapped.predict(pairs, activation_fn=torch.nn.Identity())
        result = overlapped.score("what is python", [text for _, text in pairs[:PIPELINE_PAIRS + 1]])
    finally:
        del overlapped.encode
    plain = rerankers[False].predict(pairs, activation_fn=torch.nn.Identity())
    np.testing.assert_allclose(ours, plain, rtol=0, atol=1e-5)
    assert all(name.startswith("sie-tokenize") for name in threads) and threads, threads
    expected = rerankers[False].score("what is python", [text for _, text in pairs[:PIPELINE_PAIRS + 1]])
    assert result["usage"] == expected["usage"]
    # Chunks change which pairs share a micro-batch, so scores may differ in their last bits (and near-ties swap).
    ours_by_id = {entry["item_id"]: entry["score"] for entry in result["scores"]}
    assert ours_by_id == pytest.approx({entry["item_id"]: entry["score"] for entry in expected["scores"]}, abs=1e-6)


def test_a_pair_too_long_is_named_by_its_own_index(rerankers):
    documents = ["short"] * (PIPELINE_PAIRS + 10)
    documents[PIPELINE_PAIRS + 3] = "python " * 200
    with pytest.raises(InputTooLongError) as error:
        rerankers[True].score("q", documents, options={"truncate": False})
    assert error.value.field == f"items[{PIPELINE_PAIRS + 3}]"
