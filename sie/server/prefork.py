"""What the gunicorn arbiter prepares once, so that every worker it forks, a replacement above all, starts fast.

A worker that dies (a crash, the OOM killer, SIGKILL) is replaced by the arbiter with a fresh fork. Importing
torch, transformers and the server from scratch takes seconds on a CPU; imported once in the arbiter they are
already in every fork, and the replacement only loads its models. Nothing that touches a device runs here:
CUDA does not survive a fork, and neither do thread pools, so the arbiter imports code and runs none of it.
"""

from __future__ import annotations

import importlib
import logging
import resource
import time

logger = logging.getLogger(__name__)

# Heavy, fork-safe to import: no device, thread pool or file is opened at import time.
PREIMPORTED = ("torch", "transformers", "tokenizers", "safetensors.torch", "flask", "sie", "sie.server.app")


def preimport(modules: tuple[str, ...] = PREIMPORTED) -> float:
    """Imports ``modules`` into this (the arbiter's) process; returns the seconds it took."""
    started = time.perf_counter()
    for name in modules:
        importlib.import_module(name)
    seconds = time.perf_counter() - started
    logger.info("arbiter: imported %s in %.1f s (forked workers inherit them)", ", ".join(modules), seconds)
    return seconds


def raise_open_files_limit(connections: int) -> int:
    """Raises the soft limit on open files towards ``connections`` plus headroom (up to the hard limit), so
    that idle client connections, not file descriptors, are what ``worker_connections`` bounds. Returns the
    soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections + 256
    if hard != resource.RLIM_INFINITY:
        wanted = min(wanted, hard)
    if wanted > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        return wanted
    return soft
