"""Building one of our modules for a checkpoint folder and reading its safetensors weights into it."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from sie.errors import UnsupportedModelError
from sie.kernels import KernelBackends
from sie.models import ARCHITECTURES
from sie.models.bert import fuse_qkv

# Checkpoint entries that carry no weight sie uses: buffers transformers saves, and the pooler that
# XLM-R classifiers keep from pre-training but never call.
_IGNORED_KEYS = re.compile(r"(^|\.)(embeddings\.position_ids|embeddings\.token_type_ids|roberta\.pooler\.\w+\.\w+)$")


def architecture_of(config) -> type[nn.Module]:
    """Our module class for a transformers config; raises UnsupportedModelError naming what is supported."""
    names = list(getattr(config, "architectures", None) or [])
    supported = ", ".join(ARCHITECTURES)
    for name in names:
        if name in ARCHITECTURES:
            break
    else:
        raise UnsupportedModelError(f"architecture {names or config.model_type!r} is not supported; sie runs {supported}")
    position_type = getattr(config, "position_embedding_type", "absolute")
    if position_type != "absolute":
        raise UnsupportedModelError(f"position_embedding_type {position_type!r} is not supported; sie runs 'absolute'")
    if config.num_labels != 1:
        raise UnsupportedModelError(
            f"the checkpoint has {config.num_labels} labels; sie runs cross-encoders with exactly one relevance logit"
        )
    return ARCHITECTURES[name]


def max_sequence_length(config, tokenizer_limit: int | None) -> int:
    """The longest pair the model can read: position embeddings, the tokenizer's limit, and 512 for BERT."""
    model_class = architecture_of(config)
    limit = config.max_position_embeddings
    if model_class.base_model_prefix == "roberta":
        limit -= config.pad_token_id + 1
    else:
        limit = min(limit, 512)
    if tokenizer_limit is not None and 0 < tokenizer_limit < limit:
        limit = tokenizer_limit
    return limit


def load_model(path: Path, config, backends: KernelBackends, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """Builds the module for ``config`` and loads ``path/model.safetensors`` into it, in ``dtype`` on ``device``."""
    model_class = architecture_of(config)
    with torch.device("meta"):
        model = model_class(config, backends)
    state = {key: tensor for key, tensor in fuse_qkv(load_file(path / "model.safetensors")).items()
             if not _IGNORED_KEYS.search(key)}
    expected = model.state_dict().keys()
    missing = sorted(expected - state.keys())
    unexpected = sorted(state.keys() - expected)
    if missing or unexpected:
        raise UnsupportedModelError(
            f"{path / 'model.safetensors'} does not match {model_class.__name__}: "
            f"missing {missing[:8]}, unexpected {unexpected[:8]}"
        )
    model.load_state_dict(state, strict=True, assign=True)
    return model.to(device=device, dtype=dtype).eval()
