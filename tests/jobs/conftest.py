"""The tiny random model, loaded once for every offline job test."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_reranker(random_bert_path):
    from sie import Reranker

    return Reranker(random_bert_path, device="cpu")
