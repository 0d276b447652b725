"""Reading a checkpoint's weights in any of the layouts the Hub uses.

In order of preference: one ``model.safetensors``; sharded ``model-0000x-of-0000y.safetensors`` listed by
``model.safetensors.index.json`` (every decoder reranker above 1B parameters); ``pytorch_model.bin``, read with
``weights_only=True`` so that a pickle cannot run code.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from sie.errors import UnsupportedModelError, first_line

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


def read_tensors(folder: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """``(key, tensor)`` for every tensor of ``folder``'s checkpoint, as stored, on the CPU, read one at a time.

    Each tensor views the memory-mapped file: nothing is read until it is used, and nothing but the tensor being
    read is held here, so a caller that keeps what it needs as it goes (a family's ``convert_checkpoint``) never
    holds a shard beside what it kept. What a model keeps must be copied out (``sie.models.loading``): a view would
    keep the file's pages resident for as long as the model lives. Missing weights raise UnsupportedModelError
    here, before the first tensor.
    """
    files = weight_files(folder)
    if not files:
        raise UnsupportedModelError(f"{folder} holds no weights; expected one of {', '.join(LAYOUTS)}")
    missing = [file.name for file in files if not file.is_file()]
    if missing:
        raise UnsupportedModelError(f"{folder / SAFETENSORS_INDEX} names shards that are missing: {missing[:4]}")
    for file in files:
        # Opened here for the reason: safetensors says "No such file or directory" of a file it may not read.
        try:
            with open(file, "rb"):
                pass
        except OSError as error:
            raise UnsupportedModelError(f"{file} cannot be read ({error.strerror})") from None
    return (item for file in files for item in _file_tensors(file))


def _file_tensors(file: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """One weight file's tensors, one at a time, as views of the memory-mapped file: safetensors through
    ``safe_open``, a pickle through ``torch.load(mmap=True)``. torch maps only its zip format (torch >= 1.6); a
    file in the older format, which older Hub checkpoints still carry, is read whole."""
    if file.suffix == ".safetensors":
        try:
            with safe_open(file, framework="pt") as tensors:
                for key in tensors.keys():
                    yield key, tensors.get_tensor(key)
        except SafetensorError as error:
            raise _unreadable(file, error) from None
        return
    try:
        tensors = torch.load(file, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(file))
    except pickle.UnpicklingError as error:
        raise UnsupportedModelError(f"{file} is not loaded: it holds more than tensors (weights_only), or is "
                                    f"damaged ({first_line(error)})") from None
    except (RuntimeError, OSError) as error:
        raise _unreadable(file, error) from None
    for key in list(tensors):
        yield key, tensors.pop(key)


def _unreadable(file: Path, error: Exception) -> UnsupportedModelError:
    return UnsupportedModelError(f"{file} is not a readable checkpoint file, cut short or damaged? "
                                 f"({first_line(error)})")
