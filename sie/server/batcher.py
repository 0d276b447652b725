"""Dynamic batching across requests: one consumer thread per model runs the pairs of many requests at once.

A request thread takes a ``Slot`` (admission against the bounded queue: ``QueueFullError`` past
``max_queue``), tokenizes its pairs, and submits them. The consumer takes the oldest waiting request, adds
the ones behind it while the token budget allows, waits up to ``max_wait_s`` only while other admitted
requests are still tokenizing, runs one packed batch and hands each request the logits of exactly its own
pairs. A batch that fails is rerun request by request, so a failure stays with the request that caused it.
A request still waiting at its deadline is dropped (504), and so is one whose client has closed its connection (499;
the request thread asks every ``CLIENT_CHECK_S``); one already running is waited for. A consumer that
has run a batch and then found no work for ``idle_s`` calls ``on_idle`` once (the worker trims its heap there).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from sie.server.errors import ClientGoneError, QueueFullError, RequestTimeoutError
from sie.tokenization import EncodedPairs

logger = logging.getLogger(__name__)

# How often a waiting request thread asks whether its client is still there: a client that went is dropped within
# this (before its turn, unless the queue was shorter), for a peek at a socket per waiting request each time.
CLIENT_CHECK_S = 0.1


@dataclass(frozen=True)
class BatchStats:
    """What one consumer step ran: ``requests`` requests, ``pairs`` pairs, ``tokens`` tokens, in ``seconds``."""

    requests: int
    pairs: int
    tokens: int
    seconds: float


@dataclass
class Timings:
    """Seconds one request spent waiting in the queue and in inference (its batch's run time)."""

    queue_s: float = 0.0
    inference_s: float = 0.0


class _Job:
    """One submitted request: its pairs, and the logits or error the consumer hands back."""

    def __init__(self, encoded: EncodedPairs) -> None:
        self.encoded = encoded
        self.submitted = time.perf_counter()
        self.timings = Timings()
        self.done = threading.Event()
        self.started = False
        self.abandoned = False
        self.logits = np.empty(0, dtype=np.float32)
        self.error: BaseException | None = None

    def finish(self, logits: np.ndarray, error: BaseException | None, started: float, ended: float) -> None:
        self.timings = Timings(queue_s=started - self.submitted, inference_s=ended - started)
        self.logits = logits
        self.error = error
        self.done.set()


class Batcher:
    """Coalesces the pairs of concurrent requests for one model.

    Args:
        run: scores a packed batch, ``EncodedPairs`` of ``num_pairs`` -> float32 ``(num_pairs,)`` in input
            order (``Reranker.logits``).
        max_batch_tokens: token budget of one batch; a single larger request still runs, alone.
        max_wait_s: how long a batch may wait for admitted requests that are still tokenizing.
        max_queue: requests admitted and not yet running; one more raises ``QueueFullError``.
        on_batch: called after each batch (metrics).
        on_idle: called on the consumer thread once the queue has stayed empty for ``idle_s`` after a batch.
        name: names the consumer thread.
    """

    def __init__(
        self,
        run: Callable[[EncodedPairs], np.ndarray],
        *,
        max_batch_tokens: int,
        max_wait_s: float,
        max_queue: int,
        on_batch: Callable[[BatchStats], None] | None = None,
        on_idle: Callable[[], None] | None = None,
        idle_s: float = 0.5,
        name: str = "model",
    ) -> None:
        self._run = run
        self.max_batch_tokens = max_batch_tokens
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self._on_batch = on_batch
        self._on_idle = on_idle
        self.idle_s = idle_s
        self._idle_due = False  # a batch ran since on_idle was last called; the consumer thread's own flag
        self._cond = threading.Condition()
        self._waiting: deque[_Job] = deque()
        self._admitted = 0  # holders of a slot whose job has not started running
        self._tokenizing = 0  # holders of a slot that have not submitted yet
        self._stopped = False
        self._refusal = "the server is shutting down"  # what a request that comes once it stopped is told
        self._thread = threading.Thread(target=self._loop, name=f"sie-batcher-{name}", daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        """Requests admitted and not yet running (the bounded quantity)."""
        return self._admitted

    def slot(self) -> Slot:
        """Admits one request; raises QueueFullError when ``max_queue`` requests are already waiting."""
        with self._cond:
            if self._stopped:
                raise QueueFullError(self._refusal)
            if self._admitted >= self.max_queue:
                raise QueueFullError(f"the queue is full ({self.max_queue} requests waiting); retry shortly")
            self._admitted += 1
            self._tokenizing += 1
        return Slot(self)

    def _submit(self, encoded: EncodedPairs) -> _Job:
        job = _Job(encoded)
        with self._cond:
            self._tokenizing -= 1
            self._waiting.append(job)
            self._cond.notify_all()
        return job

    def _release(self) -> None:
        """A slot ends without submitting: its request failed while tokenizing."""
        with self._cond:
            self._tokenizing -= 1
            self._admitted -= 1
            self._cond.notify_all()

    def _abandon(self, job: _Job) -> bool:
        """Drops ``job`` unless it started running; returns whether it was dropped. A job still in the queue
        gives its slot back at once, so that a request arriving next is not refused for it."""
        with self._cond:
            if job.started:
                return False
            job.abandoned = True
            if job in self._waiting:  # else it is in a batch being gathered, which drops it and its slot
                self._waiting.remove(job)
                self._admitted -= 1
            return True

    def close(self, timeout: float | None = None, refusal: str = "the server is shutting down") -> None:
        """Refuses new requests (QueueFullError saying ``refusal``) and stops the consumer once the admitted ones have
        run, those still tokenizing included (it would otherwise be gone when they submit, and they would wait out
        their deadline for a 504)."""
        with self._cond:
            self._stopped = True
            self._refusal = refusal
            self._cond.notify_all()
        self._thread.join(timeout)

    def _next_batch(self) -> list[_Job] | None:
        """Blocks for the oldest job, then gathers more within the token budget and the wait; None once stopped.
        Calls ``on_idle`` (outside the lock) when the wait for a first job outlasts ``idle_s`` after a batch."""
        while True:
            with self._cond:
                if self._wait_for_work():
                    return self._gather() if self._waiting else None
            self._idle_due = False
            try:
                self._on_idle()
            except Exception:  # a trimming failure must not stop the consumer thread
                logger.exception("on_idle failed")

    def _wait_for_work(self) -> bool:
        """Under the lock: True once a job waits or the batcher stopped with no request still tokenizing, False when
        the idle call is due."""
        while not self._waiting and not (self._stopped and self._tokenizing == 0):
            if not (self._idle_due and self._on_idle is not None):
                self._cond.wait()
            elif not self._cond.wait(self.idle_s) and not self._waiting and not self._stopped:
                return False
        return True

    def _gather(self) -> list[_Job]:
        """Under the lock, with a job waiting: that job and those behind it within the budget and the wait."""
        batch = [self._waiting.popleft()]
        tokens = batch[0].encoded.num_tokens
        deadline = time.monotonic() + self.max_wait_s
        while tokens < self.max_batch_tokens:
            if self._waiting:
                if tokens + self._waiting[0].encoded.num_tokens > self.max_batch_tokens:
                    break
                job = self._waiting.popleft()
                batch.append(job)
                tokens += job.encoded.num_tokens
                continue
            remaining = deadline - time.monotonic()
            # Wait only for requests that are already on their way: a lone request runs at once.
            if self._tokenizing == 0 or remaining <= 0 or self._stopped:
                break
            self._cond.wait(remaining)
        # Abandoned jobs are dropped; the others start and leave the bounded queue.
        self._admitted -= len(batch)
        live = [job for job in batch if not job.abandoned]
        for job in live:
            job.started = True
        return live

    def _loop(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            if batch:
                self._execute(batch)
                self._idle_due = True

    def _execute(self, batch: list[_Job]) -> None:
        started = time.perf_counter()
        try:
            encoded = batch[0].encoded if len(batch) == 1 else EncodedPairs.concat([job.encoded for job in batch])
            logits = self._run(encoded)
        except Exception as error:  # handed to the request threads, which map it to a response
            if len(batch) > 1:
                logger.warning("a batch of %d requests failed (%s); running them one by one", len(batch), error)
                for job in batch:
                    self._execute([job])
                return
            batch[0].finish(batch[0].logits, error, started, time.perf_counter())
            return
        ended = time.perf_counter()
        offsets = np.cumsum([0] + [job.encoded.num_pairs for job in batch])
        for job, start, stop in zip(batch, offsets[:-1], offsets[1:], strict=True):
            job.finish(logits[start:stop], None, started, ended)
        if self._on_batch is not None:
            try:
                self._on_batch(BatchStats(requests=len(batch), pairs=int(offsets[-1]), tokens=encoded.num_tokens,
                                          seconds=ended - started))
            except Exception:  # a reporting failure must not stop the consumer thread
                logger.exception("on_batch failed")


class Slot:
    """One admitted request's place in a batcher; use as a context manager around tokenize + ``run``."""

    def __init__(self, batcher: Batcher) -> None:
        self._batcher = batcher
        self._submitted = False

    def __enter__(self) -> Slot:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not self._submitted:
            self._batcher._release()

    def run(self, encoded: EncodedPairs, timeout_s: float,
            client_gone: Callable[[], bool] | None = None) -> tuple[np.ndarray, Timings]:
        """Submits ``encoded`` and waits for its logits, float32 ``(num_pairs,)``.

        Raises the batch's error for this request; RequestTimeoutError when it has not started running within
        ``timeout_s``; ClientGoneError when ``client_gone()`` says its client left before it started. Either way
        it is dropped; a request already running is waited for.
        """
        job = self._batcher._submit(encoded)
        self._submitted = True
        deadline = time.monotonic() + timeout_s
        while not job.done.wait(max(min(CLIENT_CHECK_S, deadline - time.monotonic()), 0.0)):
            if time.monotonic() >= deadline:
                if self._batcher._abandon(job):
                    raise RequestTimeoutError(f"the request did not start within {timeout_s:g} s; the server is busy")
                break
            if client_gone is not None and client_gone():
                if self._batcher._abandon(job):
                    raise ClientGoneError("the client closed its connection before the request started")
                break
        job.done.wait()
        if job.error is not None:
            raise job.error
        return job.logits, job.timings
