"""The architectures sie runs: one file per family (``bert.py``, ``xlm_roberta.py``), the registry that looks
them up by a checkpoint's ``architectures`` name, and loading a checkpoint into a family's module."""

from sie.models.family import ModelFamily, head_dim_of
from sie.models.loading import build_model, compute_dtype, load_model, read_config, read_tokenizer
from sie.models.registry import (
    FAMILIES,
    family_of,
    folder_task,
    sentence_transformers_settings,
    supported_architectures,
    task_of,
)

__all__ = ["FAMILIES", "ModelFamily", "build_model", "compute_dtype", "family_of", "folder_task", "head_dim_of",
           "load_model", "read_config", "read_tokenizer", "sentence_transformers_settings", "supported_architectures",
           "task_of"]
