"""Cross-request batching: 32 client threads, 200 mixed requests, every answer equal to the same request's solo
answer, and the metrics show that requests were really coalesced."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from tests.server.conftest import TINY_BERT
from sie.testing.words import random_text

NUM_REQUESTS = 200
NUM_THREADS = 32
SCORE_TOLERANCE = 1e-5
# Below this gap two scores are a tie that float summation order may flip (observed noise ~4e-9).
TIE = 1e-6


def _mixed_request(rng: np.random.Generator, index: int) -> tuple[str, Any, bool]:
    """(path, body, msgpack?) of one request: score (msgpack or JSON, with options), Cohere or TEI."""
    query = random_text(rng, int(rng.integers(1, 12)))
    texts = [random_text(rng, int(rng.integers(1, 80))) for _ in range(int(rng.integers(1, 13)))]
    kind = index % 10
    if kind < 7:
        items = [{"text": text} if rng.random() < 0.3 else {"id": f"r{index}-d{i}", "text": text}
                 for i, text in enumerate(texts)]
        options = {"raw_scores": bool(rng.random() < 0.3)}
        if rng.random() < 0.3:
            options["top_k"] = int(rng.integers(1, len(texts) + 1))
        if rng.random() < 0.2:
            options["max_length"] = int(rng.integers(96, 160))  # above any 12-word query: cuts documents only
        return f"/v1/score/{TINY_BERT}", {"query": {"id": f"q{index}", "text": query}, "items": items,
                                          "options": options}, kind < 5
    if kind < 9:
        return "/v2/rerank", {"model": TINY_BERT, "query": query, "documents": texts}, False
    return "/rerank", {"query": query, "texts": texts, "raw_scores": True}, False


def _ranked(path: str, data: Any) -> tuple[list[Any], np.ndarray]:
    """(ids in rank order, scores in rank order) of any endpoint's answer."""
    if path.startswith("/v1/score"):
        entries = [(entry["item_id"], entry["score"]) for entry in data["scores"]]
    elif path == "/v2/rerank":
        entries = [(entry["index"], entry["relevance_score"]) for entry in data["results"]]
    else:
        entries = [(entry["index"], entry["score"]) for entry in data]
    return [key for key, _ in entries], np.array([score for _, score in entries])


def _same_order(solo_ids: list[Any], solo_scores: np.ndarray, ids: list[Any]) -> bool:
    """Equal order, where only neighbours closer than TIE may trade places."""
    if sorted(map(str, ids)) != sorted(map(str, solo_ids)) or len(ids) != len(solo_ids):
        return False
    position = {key: i for i, key in enumerate(solo_ids)}
    return all(position[key] == i or abs(solo_scores[position[key]] - solo_scores[i]) < TIE
               for i, key in enumerate(ids))


def _multi_request_batches(metrics: str) -> int:
    """Batches of more than one request so far: all batches minus those in the le="1" bucket."""
    count = float(re.search(rf'sie_batch_requests_count{{model="{TINY_BERT}"[^}}]*}} (\S+)', metrics).group(1))
    single = float(re.search(rf'sie_batch_requests_bucket{{le="1.0",model="{TINY_BERT}"[^}}]*}} (\S+)',
                             metrics).group(1))
    return int(count - single)


def test_concurrent_answers_equal_solo_answers_and_batches_form(server, rng):
    requests = [_mixed_request(rng, index) for index in range(NUM_REQUESTS)]

    def send(request: tuple[str, Any, bool]) -> Any:
        path, body, as_msgpack = request
        reply = server.client.post(path, body, msgpack_in=as_msgpack, accept="application/json")
        assert reply.status == 200, reply.body
        return reply.data()

    solo = [send(request) for request in requests]
    batches_before = _multi_request_batches(server.client.get("/metrics").body.decode())
    with ThreadPoolExecutor(NUM_THREADS) as pool:
        concurrent = list(pool.map(send, requests))

    for (path, _, _), alone, together in zip(requests, solo, concurrent, strict=True):
        solo_ids, solo_scores = _ranked(path, alone)
        ids, scores = _ranked(path, together)
        assert _same_order(solo_ids, solo_scores, ids), (path, solo_ids, ids)
        position = {key: i for i, key in enumerate(solo_ids)}
        np.testing.assert_allclose(scores, solo_scores[[position[key] for key in ids]], rtol=0, atol=SCORE_TOLERANCE)
        if path.startswith("/v1/score"):
            assert together["usage"] == alone["usage"] and together["query_id"] == alone["query_id"]
    batches_after = _multi_request_batches(server.client.get("/metrics").body.decode())
    assert batches_after > batches_before, "no batch held more than one request"
