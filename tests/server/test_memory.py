"""The worker's memory controls: the allocator setting, heap trimming between batches, and the RSS metric."""

from __future__ import annotations

import re

import pytest

from sie.server import memory
from sie.server.memory import HeapTrimmer, configure_allocator, rss_bytes
from sie.server.state import EXTENSION
from tests.server.conftest import TINY_BERT, wait_ready

glibc = pytest.mark.skipif(memory._LIBC is None, reason="malloc_trim and mallopt are glibc's; this libc has neither")


def test_rss_is_this_process_resident_memory():
    before = rss_bytes()
    block = bytearray(64 << 20)  # 64 MB, touched
    assert rss_bytes() - before > 60 << 20
    del block
    assert rss_bytes(pid=999_999_999) == 0


@glibc
def test_configure_allocator_applies_a_threshold_and_leaves_zero_alone():
    assert configure_allocator(0) is False
    assert configure_allocator(64 << 20) is True  # glibc's own maximum: harmless for the rest of the run


@glibc
def test_the_trimmer_trims_at_most_once_per_interval(monkeypatch):
    calls = []
    monkeypatch.setattr(memory, "_LIBC", type("Libc", (), {"malloc_trim": staticmethod(calls.append)})())
    clock = iter([100.0, 100.2, 100.9, 101.1, 101.5, 102.2])
    monkeypatch.setattr(memory.time, "monotonic", lambda: next(clock))
    trimmer = HeapTrimmer(interval_s=1.0)
    for _ in range(6):
        trimmer.after_batch()
    assert trimmer.trims == len(calls) == 3  # at 100.0, 101.1 and 102.2


def test_an_interval_of_zero_never_trims():
    trimmer = HeapTrimmer(interval_s=0)
    trimmer.after_batch()
    assert not trimmer.enabled and trimmer.trims == 0


def test_metrics_report_the_worker_memory(client):
    text = client.get("/metrics").body.decode()
    rss = float(re.search(r'^sie_memory_bytes\{[^}]*\} ([0-9.e+]+)$', text, re.MULTILINE).group(1))
    assert rss > 50e6
    assert re.search(r'^sie_gpu_memory_reserved_bytes\{[^}]*\} 0\.0$', text, re.MULTILINE)


@glibc
def test_the_server_trims_the_heap_after_batches(make_app):
    app_client = make_app(malloc_trim_interval_s=0.001)
    assert wait_ready(app_client).status == 200
    trimmer = app_client.app.extensions[EXTENSION].registry.heap_trimmer
    before = trimmer.trims
    reply = app_client.post(f"/v1/score/{TINY_BERT}", {"query": {"text": "q"}, "items": [{"text": "d"}]})
    assert reply.status == 200
    assert trimmer.trims > before
