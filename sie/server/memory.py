"""The worker's memory: glibc allocator settings, heap trimming between batches, and the resident set size.

Why the worker's RSS grew under varied load (measured on CPU, default model, 16 clients of 1-60 documents of
1-200 words: +70% over three minutes after warm-up, still climbing): every batch allocates activations of a new
shape, from whichever of glibc's per-thread arenas the batcher thread and the request threads happen to use, and
glibc gives an arena's free memory back to the kernel only from its top. The growth was freed heap, not live
objects: ``malloc_trim``, which releases free pages only, brings RSS back and keeps it flat. Two remedies, both
applied by the worker itself:

- ``malloc_trim(0)``: it releases the free pages of every arena (a few milliseconds), so RSS tracks the working
  set of recent batches instead of their history. Under load, after a batch at most once per
  ``malloc_trim_interval_s``; and whenever a model's queue has stayed empty for ``IDLE_S`` after a batch. A trim
  is not free: the next batch faults its activations back in, which cost the bf16 CPU server 7-10% of its
  throughput at one trim a second, so under load trims are rare and an idle worker trims at once.
- optionally, ``mallopt(M_MMAP_THRESHOLD, n)``: blocks of ``n`` bytes or more come from mmap and go back to the
  kernel when freed. Off by default: a fixed threshold makes every large activation a fresh mmap plus page
  faults, which cost about a third of CPU throughput in bf16.

Neither exists outside glibc (musl, macOS): there both are no-ops and RSS is whatever that allocator keeps.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import threading
import time

logger = logging.getLogger(__name__)

_M_MMAP_THRESHOLD = -3  # mallopt parameter numbers, from glibc's malloc.h
IDLE_S = 0.5  # seconds without work after which a model's batcher reports it idle


def _libc() -> ctypes.CDLL | None:
    """glibc, when this process runs on it (it has ``malloc_trim``); None elsewhere."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


_LIBC = _libc()


def configure_allocator(mmap_threshold: int) -> bool:
    """Sets glibc's mmap threshold to ``mmap_threshold`` bytes (0: leave glibc's adaptive default).

    Returns whether a setting was applied. Called in each worker after fork, before any model loads.
    """
    if mmap_threshold <= 0 or _LIBC is None:
        return False
    if not _LIBC.mallopt(_M_MMAP_THRESHOLD, ctypes.c_int(mmap_threshold)):
        logger.warning("mallopt(M_MMAP_THRESHOLD, %d) was refused", mmap_threshold)
        return False
    return True


class HeapTrimmer:
    """Gives freed heap back to the kernel: after a batch at most once per ``interval_s``, and whenever a model
    goes idle (0: never).

    ``after_batch`` and ``when_idle`` are called by the batcher threads of every model; one trim serves them all
    (with several models, one going idle may trim while another runs a batch).
    """

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.trims = 0
        self._lock = threading.Lock()
        self._last = float("-inf")

    @property
    def enabled(self) -> bool:
        return self.interval_s > 0 and _LIBC is not None

    def after_batch(self) -> None:
        """After a batch: trims unless the last trim was less than ``interval_s`` ago."""
        if self.enabled:
            self._trim(unless_within_s=self.interval_s)

    def when_idle(self) -> None:
        """A model's queue has stayed empty since its last batch: trims whatever the interval."""
        if self.enabled:
            self._trim(unless_within_s=0.0)

    def _trim(self, unless_within_s: float) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last < unless_within_s:
                return
            self._last = now
            self.trims += 1
        _LIBC.malloc_trim(ctypes.c_size_t(0))


def rss_bytes(pid: int | None = None) -> int:
    """Resident set size of process ``pid`` (this one by default), in bytes; 0 where /proc is missing."""
    try:
        with open(f"/proc/{pid or 'self'}/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0
