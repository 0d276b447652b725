"""Sustained load on a running ``sie serve``: N clients for a while, with throughput, latency, errors and the
worker's memory over time. Used by benchmarks/soak.py (minutes, a table and a plot) and by the server's soak
test (four minutes in CI, memory flat after warm-up).

Every client sends score requests of 1-``max_documents`` documents of 1-``max_words`` words, one after another on
its own keep-alive connection, msgpack as sie-sdk does. A sampler reads the worker's resident memory (and the
GPU allocator's reserved bytes, on CUDA) from ``/metrics`` every ``sample_s``.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from sie.testing.server import HttpClient
from sie.testing.words import random_text

_GAUGE = r'^{name}\{{[^}}]*\}} ([0-9.e+]+)$'


@dataclass(frozen=True)
class Sample:
    """The worker's memory at ``t`` seconds into the run, in MB."""

    t: float
    rss_mb: float
    gpu_reserved_mb: float


@dataclass(frozen=True)
class Answer:
    """One request: when it finished (seconds into the run), its latency, status and pairs."""

    t: float
    seconds: float
    status: int
    pairs: int


@dataclass(frozen=True)
class Window:
    """What happened in ``[start, end)`` seconds of the run."""

    start: float
    end: float
    requests: int
    pairs_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    rss_mb: float


@dataclass(frozen=True)
class MemoryGrowth:
    """Resident memory after warm-up against the end of the run: the mean over a trailing window of each (RSS
    swings with the working set of the batch in flight, so single samples are noisy), and the peaks."""

    base_mb: float
    end_mb: float
    growth: float
    warmup_peak_mb: float
    peak_mb: float
    peak_growth: float


@dataclass
class SoakResult:
    """Every answer and memory sample of one run."""

    seconds: float
    clients: int
    answers: list[Answer] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)

    def errors(self) -> dict[int, int]:
        """Answers by status, for every status but 200."""
        return dict(sorted(Counter(a.status for a in self.answers if a.status != 200).items()))

    def windows(self, width_s: float) -> list[Window]:
        """The run cut into windows of ``width_s`` seconds."""
        rows = []
        for start in np.arange(0.0, self.seconds, width_s):
            end = min(start + width_s, self.seconds)
            inside = [a for a in self.answers if start <= a.t < end]
            ok = [a for a in inside if a.status == 200]
            latencies = np.array([a.seconds for a in ok]) * 1000 if ok else np.array([np.nan])
            rss = [s.rss_mb for s in self.samples if start <= s.t < end]
            rows.append(Window(float(start), float(end), len(inside), sum(a.pairs for a in ok) / (end - start),
                               float(np.percentile(latencies, 50)), float(np.percentile(latencies, 99)),
                               len(inside) - len(ok), float(np.mean(rss)) if rss else float("nan")))
        return rows

    def memory_growth(self, warmup_s: float, window_s: float = 30.0) -> MemoryGrowth:
        """RSS at the end of the run against the end of the warm-up (means over ``window_s``), and the peaks."""
        def mean_rss(start: float, end: float) -> float:
            inside = [s.rss_mb for s in self.samples if start <= s.t <= end]
            if not inside:
                raise ValueError(f"no memory sample between {start:.0f} s and {end:.0f} s")
            return float(np.mean(inside))

        base = mean_rss(max(0.0, warmup_s - window_s), warmup_s)
        end = mean_rss(self.seconds - window_s, self.seconds)
        warmup_peak = max(s.rss_mb for s in self.samples if s.t <= warmup_s)
        peak = max(s.rss_mb for s in self.samples if s.t > warmup_s)
        return MemoryGrowth(base, end, end / base - 1, warmup_peak, peak, peak / warmup_peak - 1)

    def latency_ms(self, after_s: float = 0.0) -> tuple[float, float]:
        """p50 and p99 of the successful answers finished after ``after_s``."""
        latencies = [a.seconds * 1000 for a in self.answers if a.status == 200 and a.t >= after_s]
        return float(np.percentile(latencies, 50)), float(np.percentile(latencies, 99))

    def pairs_per_s(self, after_s: float = 0.0) -> float:
        return sum(a.pairs for a in self.answers if a.status == 200 and a.t >= after_s) / (self.seconds - after_s)


def read_gauge(metrics: str, name: str) -> float:
    """The sum of gauge ``name`` over its label sets in a Prometheus text exposition (0 when absent)."""
    return sum(float(value) for value in re.findall(_GAUGE.format(name=name), metrics, flags=re.MULTILINE))


class Soak:
    """``clients`` threads scoring against ``port`` for ``seconds``, with memory sampled every ``sample_s``.

    ``largest_first``: each client's first request has the most documents of the most words, so that the
    warm-up meets the largest batches the run can make.
    """

    def __init__(self, port: int, model: str, *, clients: int = 16, seconds: float = 600.0, sample_s: float = 1.0,
                 max_documents: int = 60, max_words: int = 200, largest_first: bool = False, seed: int = 0) -> None:
        self.port = port
        self.model = model
        self.clients = clients
        self.seconds = seconds
        self.sample_s = sample_s
        self.max_documents = max_documents
        self.max_words = max_words
        self.largest_first = largest_first
        self.seed = seed

    def _request(self, rng: np.random.Generator, largest: bool) -> dict:
        documents = self.max_documents if largest else int(rng.integers(1, self.max_documents + 1))
        lengths = [self.max_words] * documents if largest else rng.integers(1, self.max_words + 1, size=documents)
        return {"query": {"text": random_text(rng, int(rng.integers(2, 12)))},
                "items": [{"text": random_text(rng, int(words))} for words in lengths]}

    def _client(self, index: int, started: float, result: SoakResult, lock: threading.Lock) -> None:
        rng = np.random.default_rng([self.seed, index])
        http = HttpClient(self.port)
        first = True
        while (sent := time.monotonic()) - started < self.seconds:
            payload = self._request(rng, self.largest_first and first)
            first = False
            try:
                status = http.post(f"/v1/score/{self.model}", payload).status
            except OSError:
                status = 0  # no HTTP answer at all (connection refused or reset)
            done = time.monotonic()
            with lock:
                result.answers.append(Answer(done - started, done - sent, status, len(payload["items"])))

    def _sampler(self, started: float, result: SoakResult, stop: threading.Event) -> None:
        http = HttpClient(self.port)
        while not stop.is_set():
            t = time.monotonic() - started
            try:
                metrics = http.get("/metrics").body.decode()
                result.samples.append(Sample(t, read_gauge(metrics, "sie_memory_bytes") / 1e6,
                                             read_gauge(metrics, "sie_gpu_memory_reserved_bytes") / 1e6))
            except OSError:
                pass
            stop.wait(self.sample_s)

    def run(self) -> SoakResult:
        result = SoakResult(self.seconds, self.clients)
        lock, stop = threading.Lock(), threading.Event()
        started = time.monotonic()
        sampler = threading.Thread(target=self._sampler, args=(started, result, stop), daemon=True)
        sampler.start()
        threads = [threading.Thread(target=self._client, args=(i, started, result, lock), daemon=True)
                   for i in range(self.clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        stop.set()
        sampler.join()
        result.seconds = time.monotonic() - started
        return result
