"""Prometheus metrics of one worker (``GET /metrics``), in a registry of its own per application.

With several workers each scrape reaches one of them; the ``worker`` label (its pid) tells them apart.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from sie.server.batcher import BatchStats
from sie.server.memory import rss_bytes
from sie.server.worker import LOOP_STATS

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_COUNT_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536)


def _cuda_reserved_bytes() -> float:
    """Reserved bytes of every CUDA device this process has used; 0 before (never initialises CUDA itself)."""
    if not torch.cuda.is_initialized():
        return 0.0
    return float(sum(torch.cuda.memory_reserved(device) for device in range(torch.cuda.device_count())))


class _LoopCollector:
    """The worker loop's ``LOOP_STATS``: bytes of requests still arriving, and the requests it refused itself."""

    def __init__(self, worker: str) -> None:
        self.worker = worker

    def collect(self):
        buffered = GaugeMetricFamily("sie_buffered_request_bytes", "Bytes of requests still arriving that the "
                                     "worker's event loop holds (bounded by --max-buffered-bytes)", labels=["worker"])
        buffered.add_metric([self.worker], LOOP_STATS.buffered_bytes)
        yield buffered
        refused = CounterMetricFamily("sie_loop_refusals", "Requests the worker's event loop answered itself, before "
                                      "any request thread: 400 malformed chunks, 408 too slow, 413 body too large, "
                                      "431 headers too large, 503 buffers full", labels=["status", "worker"])
        for status, count in sorted(LOOP_STATS.refused.items()):
            refused.add_metric([str(status), self.worker], count)
        yield refused


class Metrics:
    """Requests by endpoint and status; latency by phase; pairs, tokens and requests per batch; queue depth;
    resident memory; what the worker's event loop buffers and refuses."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        worker = ["worker"]
        self.requests = Counter("sie_requests", "HTTP requests answered, by endpoint and status",
                                ["endpoint", "status", *worker], registry=self.registry)
        self.latency = Histogram("sie_request_phase_seconds", "Seconds per request phase: tokenize, queue, "
                                 "inference, total", ["phase", *worker], buckets=_LATENCY_BUCKETS,
                                 registry=self.registry)
        self.batch_requests = Histogram("sie_batch_requests", "Requests coalesced into one batch",
                                        ["model", *worker], buckets=_COUNT_BUCKETS, registry=self.registry)
        self.batch_pairs = Histogram("sie_batch_pairs", "Pairs per batch", ["model", *worker],
                                     buckets=_COUNT_BUCKETS, registry=self.registry)
        self.batch_tokens = Histogram("sie_batch_tokens", "Tokens per batch", ["model", *worker],
                                      buckets=_COUNT_BUCKETS, registry=self.registry)
        self.batch_seconds = Histogram("sie_batch_seconds", "Seconds to run one batch", ["model", *worker],
                                       buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.queue_depth = Gauge("sie_queue_depth", "Requests admitted and not yet running", ["model", *worker],
                                 registry=self.registry)
        self._worker = str(os.getpid())
        memory = Gauge("sie_memory_bytes", "Resident memory of the worker process (RSS)", worker,
                       registry=self.registry)
        memory.labels(self._worker).set_function(rss_bytes)
        gpu_reserved = Gauge("sie_gpu_memory_reserved_bytes", "Bytes the worker's CUDA caching allocator holds (0 "
                             "without CUDA)", worker, registry=self.registry)
        gpu_reserved.labels(self._worker).set_function(_cuda_reserved_bytes)
        self.registry.register(_LoopCollector(self._worker))

    def observe_request(self, endpoint: str, status: int) -> None:
        self.requests.labels(endpoint, str(status), self._worker).inc()

    def observe_phase(self, phase: str, seconds: float) -> None:
        self.latency.labels(phase, self._worker).observe(seconds)

    def observe_batch(self, model: str, stats: BatchStats) -> None:
        self.batch_requests.labels(model, self._worker).observe(stats.requests)
        self.batch_pairs.labels(model, self._worker).observe(stats.pairs)
        self.batch_tokens.labels(model, self._worker).observe(stats.tokens)
        self.batch_seconds.labels(model, self._worker).observe(stats.seconds)

    def track_queue(self, model: str, depth: Callable[[], float]) -> None:
        """Reports ``depth()`` as the model's queue depth at every scrape."""
        self.queue_depth.labels(model, self._worker).set_function(depth)

    def untrack_queue(self, model: str) -> None:
        """Stops reporting the queue depth of ``model`` (unloaded), and drops what the gauge held of it."""
        self.queue_depth.remove(model, self._worker)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
