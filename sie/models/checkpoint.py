"""Reading a checkpoint's weights in any of the layouts the Hub uses.

In order of preference: one ``model.safetensors``; sharded ``model-0000x-of-0000y.safetensors`` listed by
``model.safetensors.index.json`` (every decoder reranker above 1B parameters); ``pytorch_model.bin``, read with
``weights_only=True`` so that a pickle cannot run code.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import torch
from safetensors.torch import load_file

from sie.errors import UnsupportedModelError

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PYTORCH_BIN = "pytorch_model.bin"
LAYOUTS = (SAFETENSORS, SAFETENSORS_INDEX, PYTORCH_BIN)


def weight_files(folder: Path) -> list[Path]:
    """The files that hold ``folder``'s weights, in the first layout present; empty when there is none.

    For a sharded checkpoint these are the shards the index names, whether or not they exist yet.
    """
    folder = Path(folder)
    if (folder / SAFETENSORS).is_file():
        return [folder / SAFETENSORS]
    index = folder / SAFETENSORS_INDEX
    if index.is_file():
        try:
            shards = json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()
        except (ValueError, KeyError, AttributeError) as error:
            raise UnsupportedModelError(f"{index} is not a safetensors index ({error})") from None
        return [folder / name for name in sorted(set(shards))]
    if (folder / PYTORCH_BIN).is_file():
        return [folder / PYTORCH_BIN]
    return []


def read_state_dict(folder: Path, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Every tensor of ``folder``'s checkpoint on the CPU, floating-point ones converted to ``dtype``.

    Tensors are converted one at a time as each file is read, so the full checkpoint is never held twice.
    """
    files = weight_files(folder)
    if not files:
        raise UnsupportedModelError(f"{folder} holds no weights; expected one of {', '.join(LAYOUTS)}")
    missing = [file.name for file in files if not file.is_file()]
    if missing:
        raise UnsupportedModelError(f"{folder / SAFETENSORS_INDEX} names shards that are missing: {missing[:4]}")
    state: dict[str, torch.Tensor] = {}
    for file in files:
        if file.suffix == ".safetensors":
            tensors = load_file(file)
        else:
            try:
                tensors = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
            except pickle.UnpicklingError as error:
                raise UnsupportedModelError(f"{file} holds more than tensors and is not loaded (weights_only): "
                                            f"{str(error).splitlines()[0]}") from None
        for key, tensor in tensors.items():
            state[key] = tensor.to(dtype) if tensor.is_floating_point() else tensor
    return state
