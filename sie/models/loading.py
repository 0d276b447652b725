"""Building a family's module for a checkpoint folder and reading its weights into it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sie.errors import UnsupportedModelError
from sie.hub.default_model import PROVENANCE_FILE
from sie.kernels import Kernels, resolve_kernels
from sie.models.checkpoint import read_state_dict
from sie.models.family import ModelFamily
from sie.quantization import INT8_WEIGHTS, int8_kernels, quantize_model, read_int8_weights

logger = logging.getLogger(__name__)


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


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype activations and non-linear weights run in: ``dtype`` itself, or fp32 for the int8 mode."""
    return torch.float32 if dtype == torch.int8 else dtype


def build_model(
    path: Path, family: ModelFamily, config: Any, device: torch.device, dtype: torch.dtype, backend: str,
    head_dim: int,
) -> tuple[nn.Module, Kernels]:
    """The kernels for ``device``/``dtype`` and ``family``'s module with ``path``'s weights, ready to run.

    ``dtype`` ``torch.int8`` is the int8 mode (``sie.quantization``, CPU only): the model loads in fp32, then its
    linear layers take the folder's own integers (``sie_int8.safetensors``) or are quantized per channel.
    """
    if dtype == torch.int8 and device.type != "cpu":
        raise UnsupportedModelError(f"dtype int8 runs on the CPU only, not on {device}; use float16 or bfloat16")
    kernels = resolve_kernels(device, compute_dtype(dtype), backend, head_dim=head_dim)
    if dtype == torch.int8:
        kernels = int8_kernels(kernels, device, backend, head_dim)
    model = load_model(path, family, config, kernels, device, compute_dtype(dtype))
    if dtype == torch.int8:
        integers = read_int8_weights(path)
        if integers is None and (Path(path) / PROVENANCE_FILE).is_file():
            logger.warning("%s was converted by an older sie and lacks %s: its linear layers are quantized per "
                           "channel instead of keeping the original file's integers; `sie models fetch-default "
                           "--force` adds them", path, INT8_WEIGHTS)
        quantize_model(model, None if integers is None else family.convert_checkpoint(integers, config))
    return model, kernels
