"""Bounds on the caches of oneDNN kernels, which PyTorch keeps one per input shape on x86 CPUs.

bf16 and int8 matmuls on a CPU run through oneDNN, which compiles a kernel for each shape and keeps it twice: in
oneDNN's primitive cache and in PyTorch's ideep cache, 1,024 entries each by default, about 1 MB an entry here.
Packed batches bring a new token count nearly every time, so a process scoring in bf16 grew without end in
practice: the default model went from 0.5 to 1.6 GB of RSS over 400 requests of varied sizes, which neither
``malloc_trim`` nor glibc's mmap threshold gave back. With 64 entries each it levels off about 130 MB above its
start. A shape that has left the cache costs its compilation again, 0.5-1 ms per matmul shape, which a new shape
costs anyway. The variables are read when the first oneDNN kernel is built, so ``import sie`` sets them; a value
the user has set wins.
"""

from __future__ import annotations

import os

CACHE_CAPACITY = 64
CACHE_VARIABLES = ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY")


def bound_kernel_caches(capacity: int = CACHE_CAPACITY) -> None:
    """Caps both caches at ``capacity`` entries unless their variables are already set."""
    for name in CACHE_VARIABLES:
        os.environ.setdefault(name, str(capacity))
