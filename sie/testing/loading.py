"""The time and memory of loading a model, each load in a fresh process: sie's Reranker, or transformers'
``from_pretrained`` as the baseline. Memory is sampled every millisecond while the model loads, as anonymous memory
(``RssAnon``: what the process allocated) and as the whole resident set (``VmRSS``, which adds the pages of files
it maps, a checkpoint's among them: page cache, which the kernel can drop and read again). Once the model is loaded,
the resident pages of the checkpoint's own files still mapped are counted apart: libraries mapped on the way move
the resident set by tens of MB with the page cache's state, those pages do not."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

LOADERS = ("sie", "transformers")

_CHILD = """
import json, os, sys, threading, time
import torch

def resident_bytes():
    # (anonymous, all) resident bytes: RssAnon and VmRSS
    with open("/proc/self/status") as status:
        fields = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in status
                  if line.startswith(("RssAnon:", "VmRSS:"))}
    return fields["RssAnon"], fields["VmRSS"]

def mapped_bytes(folder):
    # Resident bytes of the mappings of files under ``folder`` (/proc/self/smaps: a header line per mapping, then
    # its "Name: value" lines).
    total, inside = 0, False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            fields = line.split()
            if not fields[0].endswith(":"):
                inside = len(fields) >= 6 and fields[5].startswith(folder)
            elif inside and fields[0] == "Rss:":
                total += int(fields[1]) * 1024
    return total

loader, path, dtype, recipe = sys.argv[1], sys.argv[2], getattr(torch, sys.argv[3]), sys.argv[4] or None
folder = os.path.realpath(path) + os.sep
if loader == "sie":
    from sie import Reranker
    def load():
        return Reranker(path, device="cpu", dtype=dtype, recipe=recipe)
else:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification
    causal = any(name.endswith("ForCausalLM") for name in AutoConfig.from_pretrained(path).architectures)
    model_class = AutoModelForCausalLM if causal else AutoModelForSequenceClassification
    def load():
        return model_class.from_pretrained(path, dtype=dtype).eval()

peak, loading = list(resident_bytes()), True
def sample():
    while loading:
        peak[:] = map(max, peak, resident_bytes())
        time.sleep(0.001)

dynamo_before = "torch._dynamo" in sys.modules
before = resident_bytes()
sampler = threading.Thread(target=sample)
sampler.start()
started = time.perf_counter()
model = load()
seconds = time.perf_counter() - started
loading = False
sampler.join()
after = resident_bytes()
peak = list(map(max, peak, after))
print(json.dumps({"seconds": seconds, "before": before[0], "peak": peak[0], "after": after[0],
                  "rss_before": before[1], "rss_peak": peak[1], "rss_after": after[1],
                  "checkpoint_mapped": mapped_bytes(folder),
                  "dynamo_before": dynamo_before, "dynamo_after": "torch._dynamo" in sys.modules}))
"""


@dataclass(frozen=True)
class LoadMeasurement:
    """One load: its wall time; anonymous memory (and the whole resident set, ``rss_*``) before it, at its peak and
    once loaded (model still held); the resident bytes of the checkpoint's files still mapped once loaded; whether
    ``torch._dynamo`` was imported before it and after it."""

    seconds: float
    before: int
    peak: int
    after: int
    rss_before: int
    rss_peak: int
    rss_after: int
    checkpoint_mapped: int
    dynamo_before: bool
    dynamo_after: bool

    @property
    def kept(self) -> int:
        """Bytes the loaded model holds (with whatever else loading set up once: tokenizer, kernels)."""
        return self.after - self.before

    @property
    def transient(self) -> int:
        """Bytes held at the peak beyond what the loaded model keeps."""
        return self.peak - self.after


def measure_load(path: str | Path, dtype: str, recipe: str | None = None, loader: str = "sie",
                 timeout_s: float = 600) -> LoadMeasurement:
    """Loads the model in ``path`` on the CPU in ``dtype`` (a torch dtype's name: ``"int8"``, ``"float32"``...) in
    a fresh Python process with ``loader`` (one of ``LOADERS``; transformers has no int8 mode), and measures it."""
    if loader not in LOADERS:
        raise ValueError(f"unknown loader {loader!r}; expected one of {', '.join(LOADERS)}")
    result = subprocess.run([sys.executable, "-c", _CHILD, loader, str(path), dtype, recipe or ""],
                            capture_output=True, text=True, timeout=timeout_s)
    if result.returncode != 0:
        raise RuntimeError(f"loading {path} in {dtype} with {loader} failed:\n{result.stderr[-3000:]}")
    return LoadMeasurement(**json.loads(result.stdout.splitlines()[-1]))
