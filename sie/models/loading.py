"""Building a family's module for a checkpoint folder and reading its weights into it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from sie.errors import UnsupportedModelError
from sie.kernels import Kernels
from sie.models.checkpoint import read_state_dict
from sie.models.family import ModelFamily


def load_model(
    path: Path, family: ModelFamily, config: Any, kernels: Kernels, device: torch.device, dtype: torch.dtype
) -> nn.Module:
    """``family``'s module for ``config`` with the weights of ``path``, in ``dtype`` on ``device``, in eval mode.

    The module is built on the meta device and takes the checkpoint's tensors as they are (no initialisation).
    Tensors are read and converted on the CPU and only what the module keeps moves to ``device``: a causal LM's
    vocabulary projection, say, never reaches the GPU. Raises UnsupportedModelError when the checkpoint's keys
    do not match the module's.
    """
    with torch.device("meta"):
        model = family.module(config, kernels)
    state = {key: tensor.to(device) for key, tensor in
             family.convert_checkpoint(read_state_dict(path, dtype), config).items()}
    expected = model.state_dict().keys()
    missing = sorted(expected - state.keys())
    unexpected = sorted(state.keys() - expected)
    if missing or unexpected:
        raise UnsupportedModelError(
            f"the checkpoint in {path} does not match {type(model).__name__}: "
            f"missing {missing[:8]}, unexpected {unexpected[:8]}"
        )
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()
