"""The fidelity set: natural English queries, each with 10-12 candidate documents of varied length.

Written for sie, not drawn from any benchmark. Each query's ``relevant`` is the index of its one clearly
relevant document; the others are plausible distractors. The default model's conversion, the bf16 mode and
the benchmarks are judged on it (same top-1, rank correlation).
"""

from __future__ import annotations

import functools
import json
import os
from importlib import resources
from typing import Any

import numpy as np


@functools.cache
def fidelity_queries() -> tuple[dict[str, Any], ...]:
    """Every entry ``{"query": str, "documents": [str, ...], "relevant": int}``."""
    text = resources.files("sie.testing").joinpath("data/fidelity_set.json").read_text(encoding="utf-8")
    return tuple(json.loads(text)["queries"])


def fidelity_pairs() -> list[tuple[int, str, str]]:
    """``(query index, query, document)`` for every document of the set, query by query."""
    return [(index, entry["query"], document) for index, entry in enumerate(fidelity_queries())
            for document in entry["documents"]]


def onnx_runtime_session(onnx_path: str | os.PathLike):
    """An ONNX Runtime CPU session on ``onnx_path`` with torch's thread count, its idle threads not spinning
    (spinning threads would starve torch's in the same process)."""
    import onnxruntime
    import torch

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])


def onnx_runtime_logits(onnx_path: str | os.PathLike, tokenizer_path: str | os.PathLike,
                        pairs: list[tuple[int, str, str]]) -> np.ndarray:
    """The logit of each of ``pairs`` (as :func:`fidelity_pairs`) from an ONNX cross-encoder (inputs ``input_ids``,
    ``token_type_ids``, ``attention_mask``; output ``logits``), one pair per run: the default model's original
    graph quantizes activations with one scale per tensor, so padding would shift it. Returns float32 [pairs]."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
    session = onnx_runtime_session(onnx_path)
    encoded = tokenizer([query for _, query, _ in pairs], [document for _, _, document in pairs], truncation=True,
                        max_length=512)
    return np.array([session.run(["logits"], {
        "input_ids": np.array([ids]), "token_type_ids": np.array([types]),
        "attention_mask": np.ones((1, len(ids)), dtype=np.int64)})[0][0, 0]
        for ids, types in zip(encoded["input_ids"], encoded["token_type_ids"], strict=True)], dtype=np.float32)


def agreement(ours: np.ndarray, reference: np.ndarray) -> tuple[list[float], int, int]:
    """For scores of :func:`fidelity_pairs` in its order: per query, Spearman's rho of ``ours`` against
    ``reference``; over the set, how many queries have the same top-1 and how many have the labelled document
    first in ``ours``. Needs scipy."""
    from scipy.stats import spearmanr

    owners = np.array([index for index, _, _ in fidelity_pairs()])
    rhos, same_top1, relevant_top1 = [], 0, 0
    for index, entry in enumerate(fidelity_queries()):
        mine, theirs = ours[owners == index], reference[owners == index]
        rhos.append(float(spearmanr(mine, theirs).statistic))
        same_top1 += int(np.argmax(mine) == np.argmax(theirs))
        relevant_top1 += int(np.argmax(mine) == entry["relevant"])
    return rhos, same_top1, relevant_top1
