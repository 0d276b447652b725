"""What every offline job shares: the check of one row's texts, and the one scoring call.

``sie score-file`` and the Ray ``Scorer`` both score through ``score_pairs``, which is ``Reranker.predict``: the
same tokenization, token-budget micro-batches and sigmoid, so a pair scored by either gets what ``predict`` gives
it for the same model, dtype and device (bit for bit when it is scored among the same pairs; a different batch
composition changes the float rounding of the matmuls, by about 1e-7 in fp32).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from sie.inputs import NOT_UTF8, is_utf8_text
from sie.reranker import Reranker

# Rows a file job reads, scores and writes at once: enough pairs to fill many token-budget micro-batches, few
# enough that memory stays small and a killed run redoes little.
DEFAULT_CHUNK_ROWS = 4096


def text_problem(value: object) -> str | None:
    """Why ``value`` cannot be scored as a query or document text, or None when it can."""
    if isinstance(value, str):
        return None if is_utf8_text(value) else NOT_UTF8
    if value is None:
        return "is missing or null"
    return f"must be a string, got {type(value).__name__}"


def score_pairs(reranker: Reranker, queries: Sequence[str], documents: Sequence[str]) -> np.ndarray:
    """sigmoid(logit) of each ``(queries[i], documents[i])``: float32 ``(num_pairs,)`` in input order, as the score
    API gives, whatever activation the checkpoint names for ``predict``."""
    return reranker.predict(list(zip(queries, documents, strict=True)), activation_fn=torch.sigmoid)
