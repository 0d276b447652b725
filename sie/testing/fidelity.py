"""The fidelity set: natural English queries, each with 10-12 candidate documents of varied length.

Written for sie, not drawn from any benchmark. Each query's ``relevant`` is the index of its one clearly
relevant document; the others are plausible distractors. The default model's conversion, the bf16 mode and
the benchmarks are judged on it (same top-1, rank correlation).
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any


@functools.cache
def fidelity_queries() -> tuple[dict[str, Any], ...]:
    """Every entry ``{"query": str, "documents": [str, ...], "relevant": int}``."""
    text = resources.files("sie.testing").joinpath("data/fidelity_set.json").read_text(encoding="utf-8")
    return tuple(json.loads(text)["queries"])
