"""The batcher: coalescing, token budget, the bounded queue, deadlines and failure isolation.

Queue mechanics use a pure scoring function (the sum of each pair's token ids), which makes every pair's
expected value known; the last test runs the real engine through the batcher.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from sie.server.batcher import Batcher, BatchStats
from sie.server.errors import ClientGoneError, QueueFullError, RequestTimeoutError
from sie.tokenization import EncodedPairs

POISON = -1  # a token id the scoring function refuses


def _pairs(rng: np.random.Generator, num_pairs: int, max_len: int = 20) -> EncodedPairs:
    lengths = rng.integers(1, max_len + 1, size=num_pairs).astype(np.int64)
    ids = rng.integers(0, 1000, size=int(lengths.sum())).astype(np.int64)
    return EncodedPairs(input_ids=ids, token_type_ids=np.zeros_like(ids), lengths=lengths)


def _sums(encoded: EncodedPairs) -> np.ndarray:
    """float32 ``(num_pairs,)``: each pair's token-id sum; raises on a POISON token."""
    if (encoded.input_ids == POISON).any():
        raise ValueError("poisoned pair")
    return np.add.reduceat(encoded.input_ids, encoded.starts).astype(np.float32)


class Recorder:
    """The scoring function, recording each batch it ran, optionally slowed to let requests pile up."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.batches: list[int] = []  # pairs per call
        self.calls = 0  # calls begun, those waiting on the gate included
        self.stats: list[BatchStats] = []
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, encoded: EncodedPairs) -> np.ndarray:
        self.calls += 1
        self.gate.wait()
        time.sleep(self.delay_s)
        self.batches.append(encoded.num_pairs)
        return _sums(encoded)


def _batcher(run: Recorder, **overrides) -> Batcher:
    settings = dict(max_batch_tokens=10_000, max_wait_s=0.05, max_queue=1000, on_batch=run.stats.append)
    settings.update(overrides)
    return Batcher(run, **settings)


def _wait_for(condition, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "the batcher never reached the state the test needs"
        time.sleep(0.01)


def _score(batcher: Batcher, encoded: EncodedPairs, timeout_s: float = 30.0) -> np.ndarray:
    with batcher.slot() as slot:
        logits, _ = slot.run(encoded, timeout_s)
    return logits


def test_concurrent_requests_share_batches_and_get_exactly_their_own_results(rng):
    requests = [_pairs(rng, int(rng.integers(1, 9))) for _ in range(64)]
    run = Recorder(delay_s=0.01)
    batcher = _batcher(run)
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda encoded: _score(batcher, encoded), requests))
    for encoded, logits in zip(requests, results, strict=True):
        np.testing.assert_array_equal(logits, _sums(encoded))
    assert max(stats.requests for stats in run.stats) > 1
    assert sum(stats.requests for stats in run.stats) == len(requests)
    assert sum(stats.pairs for stats in run.stats) == sum(encoded.num_pairs for encoded in requests)
    batcher.close()


def test_the_token_budget_bounds_batches_but_a_larger_request_runs_alone(rng):
    run = Recorder()
    run.gate.clear()  # hold the consumer so that every request is queued before the first batch
    batcher = _batcher(run, max_batch_tokens=100)
    large = EncodedPairs(np.ones(150, np.int64), np.zeros(150, np.int64), np.full(30, 5, np.int64))
    requests = [_pairs(rng, 3, max_len=10) for _ in range(20)] + [large]
    with ThreadPoolExecutor(len(requests)) as pool:
        futures = [pool.submit(_score, batcher, encoded) for encoded in requests]
        time.sleep(0.2)
        run.gate.set()
        results = [future.result() for future in futures]
    for encoded, logits in zip(requests, results, strict=True):
        np.testing.assert_array_equal(logits, _sums(encoded))
    for stats in run.stats:
        assert stats.tokens <= 100 or stats.requests == 1
    assert any(stats.tokens == 150 and stats.requests == 1 for stats in run.stats)
    batcher.close()


def test_a_lone_request_does_not_wait_for_the_batch_window(rng):
    run = Recorder()
    batcher = _batcher(run, max_wait_s=5.0)
    started = time.perf_counter()
    _score(batcher, _pairs(rng, 2))
    assert time.perf_counter() - started < 1.0
    batcher.close()


def test_a_request_whose_client_went_is_dropped_before_it_runs_and_one_running_is_finished(rng):
    run = Recorder()
    run.gate.clear()
    batcher = _batcher(run, max_wait_s=0.0)
    first, second = _pairs(rng, 1), _pairs(rng, 2)
    gone = threading.Event()

    def score_until_gone(encoded: EncodedPairs) -> np.ndarray:
        with batcher.slot() as slot:
            return slot.run(encoded, 30.0, gone.is_set)[0]

    with ThreadPoolExecutor(2) as pool:
        running = pool.submit(score_until_gone, first)  # taken by the consumer, blocked on the gate
        _wait_for(lambda: run.calls == 1)
        waiting = pool.submit(score_until_gone, second)
        _wait_for(lambda: batcher.depth == 1 and batcher._tokenizing == 0)  # submitted, waiting its turn
        gone.set()
        with pytest.raises(ClientGoneError):
            waiting.result(timeout=5.0)
        assert batcher.depth == 0, "the slot of a dropped request is free at once"
        run.gate.set()
        np.testing.assert_array_equal(running.result(timeout=5.0), _sums(first))
    batcher.close()
    assert run.batches == [1], "the dropped request never ran"


def test_admission_past_max_queue_raises_queue_full_and_slots_are_released(rng):
    run = Recorder()
    run.gate.clear()
    batcher = _batcher(run, max_queue=2, max_wait_s=0.0)
    with ThreadPoolExecutor(3) as pool:
        running = pool.submit(_score, batcher, _pairs(rng, 1))  # taken by the consumer, blocked on the gate
        time.sleep(0.1)
        waiting = [pool.submit(_score, batcher, _pairs(rng, 1)) for _ in range(2)]
        time.sleep(0.1)
        assert batcher.depth == 2
        with pytest.raises(QueueFullError):
            batcher.slot()
        run.gate.set()
        for future in [running, *waiting]:
            future.result()
    assert batcher.depth == 0
    with batcher.slot():  # a request that fails before submitting gives its slot back
        pass
    assert batcher.depth == 0
    batcher.close()


def test_a_request_waiting_past_its_deadline_gets_504_and_is_dropped(rng):
    run = Recorder()
    run.gate.clear()
    batcher = _batcher(run, max_wait_s=0.0)
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(_score, batcher, _pairs(rng, 2))
        time.sleep(0.1)
        late = _pairs(rng, 3)
        with pytest.raises(RequestTimeoutError):
            _score(batcher, late, timeout_s=0.2)
        # Its slot is free at once, while the first request still runs: the next one is not refused for it.
        depth_while_first_runs = batcher.depth
        run.gate.set()
        first.result()
    assert depth_while_first_runs == 0
    time.sleep(0.1)
    assert run.batches == [2], "the abandoned request must not run"
    assert batcher.depth == 0
    batcher.close()


def test_a_failing_request_fails_alone(rng):
    run = Recorder()
    run.gate.clear()
    batcher = _batcher(run)
    requests = [_pairs(rng, 4) for _ in range(6)]
    bad = _pairs(rng, 3)
    bad.input_ids[2] = POISON
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(_score, batcher, encoded) for encoded in [*requests[:3], bad, *requests[3:]]]
        time.sleep(0.2)
        run.gate.set()
        with pytest.raises(ValueError, match="poisoned"):
            futures[3].result()
        good = [future.result() for index, future in enumerate(futures) if index != 3]
    for encoded, logits in zip(requests, good, strict=True):
        np.testing.assert_array_equal(logits, _sums(encoded))
    batcher.close()


def test_close_runs_what_is_queued_then_refuses(rng):
    run = Recorder()
    run.gate.clear()
    batcher = _batcher(run)
    requests = [_pairs(rng, 2) for _ in range(3)]
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(_score, batcher, encoded) for encoded in requests]
        time.sleep(0.1)
        closing = pool.submit(batcher.close)
        time.sleep(0.1)
        with pytest.raises(QueueFullError):
            batcher.slot()
        run.gate.set()
        closing.result()
        for encoded, future in zip(requests, futures, strict=True):
            np.testing.assert_array_equal(future.result(), _sums(encoded))


def test_a_request_still_tokenizing_when_close_begins_still_runs(rng):
    batcher = _batcher(Recorder())
    encoded = _pairs(rng, 3)
    with batcher.slot() as slot:
        closing = threading.Thread(target=batcher.close)
        closing.start()
        time.sleep(0.1)
        assert closing.is_alive(), "close waits for the request it admitted"
        started = time.monotonic()
        logits, _ = slot.run(encoded, 3.0)
        assert time.monotonic() - started < 1.0, "answered at once, not a 504 after its deadline"
    np.testing.assert_array_equal(logits, _sums(encoded))
    closing.join(5)
    assert not closing.is_alive()


def test_the_consumer_reports_idle_once_after_each_spell_of_work(rng):
    idle_times: list[float] = []
    batcher = _batcher(Recorder(), on_idle=lambda: idle_times.append(time.monotonic()), idle_s=0.2)
    time.sleep(0.5)
    assert idle_times == []  # no batch has run yet: nothing to report
    for _ in range(3):  # requests closer together than idle_s: one spell of work
        _score(batcher, _pairs(rng, 2))
        time.sleep(0.05)
    finished = time.monotonic()
    time.sleep(0.8)
    assert len(idle_times) == 1 and idle_times[0] - finished >= 0.1
    _score(batcher, _pairs(rng, 2))
    time.sleep(0.5)
    assert len(idle_times) == 2
    batcher.close()


def test_a_failing_idle_call_leaves_the_consumer_serving(rng):
    def on_idle():
        raise RuntimeError("trim failed")

    batcher = _batcher(Recorder(), on_idle=on_idle, idle_s=0.05)
    encoded = _pairs(rng, 3)
    _score(batcher, encoded)
    time.sleep(0.2)
    np.testing.assert_array_equal(_score(batcher, encoded), _sums(encoded))
    batcher.close()


def test_the_real_engine_through_the_batcher_equals_solo_logits(tiny_reranker, rng):
    words = "python snake language data model rank score weather rain the of".split()
    requests = [(" ".join(rng.choice(words, 4)), [" ".join(rng.choice(words, int(rng.integers(1, 30))))
                                                   for _ in range(int(rng.integers(1, 6)))]) for _ in range(24)]
    encoded = [tiny_reranker.encode(query, documents) for query, documents in requests]
    solo = [tiny_reranker.logits(one) for one in encoded]
    stats: list[BatchStats] = []
    batcher = Batcher(tiny_reranker.logits, max_batch_tokens=tiny_reranker.max_batch_tokens, max_wait_s=0.05,
                      max_queue=100, on_batch=stats.append)
    with ThreadPoolExecutor(12) as pool:
        batched = list(pool.map(lambda one: _score(batcher, one), encoded))
    for alone, together in zip(solo, batched, strict=True):
        np.testing.assert_allclose(together, alone, rtol=0, atol=1e-5)
    assert max(s.requests for s in stats) > 1
    batcher.close()
