"""The worker's memory controls: the allocator setting, heap trimming between batches, and the RSS metric."""

from __future__ import annotations

import mmap
import re
import time

import pytest

from sie.server import memory
from sie.server.memory import HeapTrimmer, configure_allocator, rss_bytes
from sie.server.state import EXTENSION
from tests.server.conftest import TINY_BERT, wait_ready

glibc = pytest.mark.skipif(memory._LIBC is None, reason="malloc_trim and mallopt are glibc's; this libc has neither")


def _rss_growth(size: int, touch: bool) -> int:
    """How much rss_bytes grows while ``size`` bytes of fresh anonymous pages are mapped (and each written once)."""
    with mmap.mmap(-1, size) as region:
        before = rss_bytes()
        if touch:
            for offset in range(0, size, mmap.PAGESIZE):
                region[offset] = 1
        return rss_bytes() - before


def test_rss_is_this_process_resident_memory():
    # Fresh pages, not a heap block: malloc may hand out memory this process had already touched and freed (CI once
    # saw +52 MB for a 64-MB bytes object). Other threads of this process (an earlier test's heap trimmer) may free
    # memory meanwhile, so the best of three tries counts.
    assert max(_rss_growth(64 << 20, touch=True) for _ in range(3)) > 60 << 20
    assert _rss_growth(64 << 20, touch=False) < 16 << 20  # mapped is not resident
    assert rss_bytes(pid=999_999_999) == 0


@glibc
def test_configure_allocator_applies_a_threshold_and_leaves_zero_alone():
    assert configure_allocator(0) is False
    assert configure_allocator(64 << 20) is True  # glibc's own maximum: harmless for the rest of the run


@pytest.fixture
def trim_calls(monkeypatch) -> list:
    """The arguments of every malloc_trim call, made on a stand-in for glibc."""
    calls = []
    monkeypatch.setattr(memory, "_LIBC", type("Libc", (), {"malloc_trim": staticmethod(calls.append)})())
    return calls


def test_the_trimmer_trims_at_most_once_per_interval(trim_calls, monkeypatch):
    calls = trim_calls
    clock = iter([100.0, 100.2, 100.9, 101.1, 101.5, 102.2])
    monkeypatch.setattr(memory.time, "monotonic", lambda: next(clock))
    trimmer = HeapTrimmer(interval_s=1.0)
    for _ in range(6):
        trimmer.after_batch()
    assert trimmer.trims == len(calls) == 3  # at 100.0, 101.1 and 102.2


def test_an_idle_model_trims_at_once_whatever_the_interval(trim_calls):
    calls = trim_calls
    trimmer = HeapTrimmer(interval_s=3600)
    trimmer.after_batch()
    trimmer.after_batch()
    assert len(calls) == 1
    trimmer.when_idle()
    assert trimmer.trims == len(calls) == 2
    trimmer.after_batch()  # the idle trim restarts the interval
    assert len(calls) == 2


def test_an_interval_of_zero_never_trims():
    trimmer = HeapTrimmer(interval_s=0)
    trimmer.after_batch()
    trimmer.when_idle()
    assert not trimmer.enabled and trimmer.trims == 0


def test_metrics_report_the_worker_memory(client):
    text = client.get("/metrics").body.decode()
    rss = float(re.search(r'^sie_memory_bytes\{[^}]*\} ([0-9.e+]+)$', text, re.MULTILINE).group(1))
    assert rss > 50e6
    assert re.search(r'^sie_gpu_memory_reserved_bytes\{[^}]*\} 0\.0$', text, re.MULTILINE)


def _score_once(make_app, interval_s: float) -> tuple[HeapTrimmer, int]:
    """A server trimming at most every ``interval_s`` scores one pair; returns its trimmer and the trims before."""
    app_client = make_app(malloc_trim_interval_s=interval_s)
    assert wait_ready(app_client).status == 200
    trimmer = app_client.app.extensions[EXTENSION].registry.heap_trimmer
    before = trimmer.trims
    reply = app_client.post(f"/v1/score/{TINY_BERT}", {"query": {"text": "q"}, "items": [{"text": "d"}]})
    assert reply.status == 200
    return trimmer, before


@glibc
def test_the_server_trims_the_heap_after_batches(make_app):
    trimmer, before = _score_once(make_app, interval_s=0.001)
    assert trimmer.trims > before


@glibc
def test_the_server_trims_the_heap_when_a_model_goes_idle(make_app):
    trimmer, before = _score_once(make_app, interval_s=3600)
    # The interval allows one trim after the batch; the second can only be the idle one.
    deadline = time.monotonic() + 10
    while trimmer.trims < before + 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert trimmer.trims == before + 2
