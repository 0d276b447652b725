"""The model registry: the families sie runs, looked up by the ``architectures`` name in a checkpoint's config.

Adding an architecture is a new file under ``sie/models/`` that defines its ``FAMILY``, plus one line below. A family
scores (a reranker: ``sie.Reranker``) or encodes (an embedding model's body: ``sie.Encoder``); a family's body is
often registered twice, under its classifier's and its base model's architecture names. A name belongs to at most one
family per task: Qwen3ForCausalLM is both Qwen3-Reranker's (scoring) and Qwen3-Embedding's (encoding).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from sie.errors import UnsupportedModelError
from sie.models import bert, modernbert, qwen2, qwen3, xlm_roberta
from sie.models.family import ModelFamily

FAMILIES: tuple[ModelFamily, ...] = (
    bert.FAMILY,
    xlm_roberta.FAMILY,
    qwen2.CAUSAL_LM,
    qwen2.CLASSIFIER,
    qwen3.CAUSAL_LM,
    qwen3.CLASSIFIER,
    modernbert.FAMILY,
    bert.ENCODER,
    xlm_roberta.ENCODER,
    modernbert.ENCODER,
    qwen3.ENCODER,
)
TASKS = ("score", "encode")
# How each task is run, for the error that sends a checkpoint of the other task there.
_RUN_WITH = {"score": "sie.Reranker (POST /v1/score)", "encode": "sie.Encoder (POST /v1/encode)"}


def _by_architecture(families: tuple[ModelFamily, ...]) -> dict[str, dict[str, ModelFamily]]:
    """architecture name -> task -> the family that runs the name for the task."""
    index: dict[str, dict[str, ModelFamily]] = {}
    for family in families:
        for name in family.architectures:
            index.setdefault(name, {})[family.task] = family
    return index


_BY_ARCHITECTURE = _by_architecture(FAMILIES)


def supported_architectures(task: str | None = None) -> list[str]:
    """Every ``config.architectures`` name some family runs (for ``task``, when given), sorted."""
    return sorted(name for name, tasks in _BY_ARCHITECTURE.items() if task is None or task in tasks)


def task_of(architectures: list[str] | tuple[str, ...] | None, sentence_transformers: bool = False) -> str | None:
    """What a checkpoint with these ``architectures`` names does, ``"score"`` or ``"encode"``; None if unknown.

    The first name some family runs decides. A name both tasks run (Qwen3ForCausalLM) does not say which the
    checkpoint is, its folder does: an embedding model's when it is a sentence-transformers folder
    (``sentence_transformers``: Qwen3-Embedding), else a reranker's (Qwen3-Reranker).
    """
    for name in architectures or ():
        tasks = _BY_ARCHITECTURE.get(name)
        if tasks:
            if len(tasks) == 1:
                return next(iter(tasks))
            return "encode" if sentence_transformers else "score"
    return None


def folder_task(architectures: list[str] | tuple[str, ...] | None, folder: str | os.PathLike[str]) -> str | None:
    """``task_of`` for the checkpoint in ``folder``: a sentence-transformers embedding folder when it has
    ``modules.json`` and is no CrossEncoder's (``is_cross_encoder_folder``)."""
    folder = Path(folder)
    embedding_folder = (folder / "modules.json").is_file() and not is_cross_encoder_folder(folder)
    return task_of(architectures, sentence_transformers=embedding_folder)


def is_cross_encoder_folder(folder: Path) -> bool:
    """Whether ``folder`` is a sentence-transformers CrossEncoder's: ``config_sentence_transformers.json`` says
    ``"model_type": "CrossEncoder"``, as sentence-transformers itself reads it. Since 5.4 it saves a causal-LM
    reranker (Qwen3-Reranker) so, with a ``modules.json`` (Transformer, LogitScore) like an embedding model's."""
    return sentence_transformers_settings(folder).get("model_type") == "CrossEncoder"


def sentence_transformers_settings(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """``folder``'s ``config_sentence_transformers.json``; empty when there is none or it is no JSON object."""
    try:
        settings = json.loads((Path(folder) / "config_sentence_transformers.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return settings if isinstance(settings, dict) else {}


def family_of(config: Any, task: str = "score") -> ModelFamily:
    """The family that runs ``config`` (a transformers config) for ``task``, after its ``check_config``.

    Raises UnsupportedModelError naming the supported architectures, saying where a checkpoint of the other task
    runs, or giving the family's reason to refuse.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    names = list(getattr(config, "architectures", None) or [])
    if not names:
        raise UnsupportedModelError(f"the config names no architectures (a {config.model_type!r} model); sie reads "
                                    f"the field to pick a family: one of {', '.join(supported_architectures(task))}")
    known = [(name, _BY_ARCHITECTURE[name]) for name in names if name in _BY_ARCHITECTURE]
    # A config may list several (the body and a head): the first that runs ``task`` wins.
    for name, tasks in known:
        if task in tasks:
            family = tasks[task]
            family.check_config(config)
            return family
    if known:
        # No known name runs ``task``: each runs the other task only.
        name, tasks = known[0]
        family = next(iter(tasks.values()))
        kind = "an embedding model" if family.task == "encode" else "a reranker"
        raise UnsupportedModelError(f"{name} is {kind}; it runs with {_RUN_WITH[family.task]}, not "
                                    f"{_RUN_WITH[task]}")
    raise UnsupportedModelError(f"architecture {names!r} is not supported; "
                                f"sie runs {', '.join(supported_architectures(task))}")
