"""Building a family's module for a checkpoint folder and reading its weights into it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from sie.errors import UnsupportedModelError, first_line
from sie.hub.default_model import PROVENANCE_FILE
from sie.kernels import Kernels, resolve_kernels
from sie.models.checkpoint import read_tensors
from sie.models.family import ModelFamily
from sie.quantization import INT8_WEIGHTS, int8_kernels, quantize_model, read_int8_weights

try:  # huggingface_hub >= 0.33: transformers 5 validates config fields' types (num_hidden_layers: null, say) with it
    from huggingface_hub.errors import StrictDataclassError
except ImportError:  # pragma: no cover
    StrictDataclassError = ValueError

logger = logging.getLogger(__name__)


class SkipInitialisation(TorchFunctionMode):
    """Makes the initialisation of meta tensors a no-op (``torch.nn.init``'s functions, which ``nn.Linear`` and
    ``nn.Embedding`` call, and the ``fill_``/``zero_`` of ``nn.LayerNorm``): a module built on the meta device takes
    every value from the checkpoint, and meta ``normal_`` alone imports ``torch._dynamo``, 1.2-2.5 s of a fresh
    process's first model load here."""

    TENSOR_INITIALISERS = frozenset({torch.Tensor.fill_, torch.Tensor.zero_, torch.Tensor.normal_,
                                     torch.Tensor.uniform_})

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        target = args[0] if args else kwargs.get("tensor")
        initialiser = getattr(func, "__module__", None) == "torch.nn.init" or func in self.TENSOR_INITIALISERS
        if initialiser and isinstance(target, torch.Tensor) and target.is_meta:
            return target
        return func(*args, **kwargs)


def read_config(path: Path) -> Any:
    """The transformers config of the checkpoint folder ``path``; UnsupportedModelError when transformers cannot
    read it (not JSON, a ``model_type`` it does not know, a field of the wrong type)."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(path)
    except (OSError, ValueError, KeyError, TypeError, StrictDataclassError) as error:
        raise UnsupportedModelError(f"{Path(path) / 'config.json'} cannot be read by transformers "
                                    f"({type(error).__name__}: {first_line(error)[:200]})") from None


# The files a transformers tokenizer is read from: tokenizers' own file, or a slow tokenizer's vocabulary (WordPiece,
# SentencePiece, byte-level BPE). A folder with none of them is refused: transformers 5 then builds its class's
# tokenizer with an empty vocabulary, which reads every word as the unknown token (and scores it, with no error).
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "sentencepiece.bpe.model", "spiece.model", "tokenizer.model",
                   "vocab.json")


def read_tokenizer(path: Path, config: Any) -> Any:
    """transformers' tokenizer of the checkpoint folder ``path``; UnsupportedModelError naming the folder when it holds
    no tokenizer files, when transformers cannot read them, or when the tokenizer gives ids past the model's
    vocabulary (``config.vocab_size``: another model's tokenizer, which would index past the embedding table)."""
    from transformers import AutoTokenizer

    path = Path(path)
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise UnsupportedModelError(f"{path} holds no tokenizer: none of {', '.join(TOKENIZER_FILES)}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    # A JSONDecodeError is a ValueError; tokenizers raises a bare Exception for a tokenizer.json it cannot read (one
    # written by a newer version, say).
    except Exception as error:
        raise UnsupportedModelError(f"the tokenizer in {path} cannot be read by transformers "
                                    f"({type(error).__name__}: {first_line(error)[:200]})") from None
    vocab_size = getattr(config, "vocab_size", None)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if isinstance(vocab_size, int) and backend is not None:
        highest = max(backend.get_vocab(with_added_tokens=True).values(), default=-1)
        if highest >= vocab_size:
            raise UnsupportedModelError(f"the tokenizer in {path} does not match the model: it gives ids up to "
                                        f"{highest}, the model's vocabulary (config.json vocab_size) has "
                                        f"{vocab_size}")
    return tokenizer


def load_model(
    path: Path, family: ModelFamily, config: Any, kernels: Kernels, device: torch.device, dtype: torch.dtype | None
) -> nn.Module:
    """``family``'s module for ``config`` with the weights of ``path``, in ``dtype`` on ``device``, in eval mode.

    The module is built on the meta device and takes the checkpoint's tensors as they are (no initialisation).
    Tensors are read one at a time on the CPU and converted as stored (fused, and a causal LM's vocabulary
    projection cut to its score rows as it is read); then each is copied to ``device`` in ``dtype``, so that the
    model views none of the checkpoint's file. ``dtype`` None keeps each tensor as stored, possibly a view of the
    file: the int8 mode quantizes from those and copies the rest (``build_model``). Raises UnsupportedModelError
    when the checkpoint's keys do not match the module's.
    """
    with torch.device("meta"), SkipInitialisation():
        model = family.module(config, kernels)
    state = family.convert_checkpoint(read_tensors(path), config)
    state = {key: _placed(state.pop(key), device, dtype) for key in list(state)}
    shapes = {key: tensor.shape for key, tensor in model.state_dict().items()}
    missing = sorted(shapes.keys() - state.keys())
    unexpected = sorted(state.keys() - shapes.keys())
    if missing or unexpected:
        raise UnsupportedModelError(
            f"the checkpoint in {path} does not match {type(model).__name__}: "
            f"missing {missing[:8]}, unexpected {unexpected[:8]}"
        )
    # A tensor of another shape than the config implies (a head with two labels, a vocabulary or width the config
    # does not state): named here, as the keys above, not load_state_dict's RuntimeError.
    mismatched = [f"{key} {tuple(state[key].shape)}, expected {tuple(shapes[key])}" for key in sorted(state)
                  if state[key].shape != shapes[key]]
    if mismatched:
        raise UnsupportedModelError(f"the checkpoint in {path} does not match its config.json "
                                    f"({type(model).__name__}): {'; '.join(mismatched[:4])}")
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


def _placed(tensor: torch.Tensor, device: torch.device, dtype: torch.dtype | None) -> torch.Tensor:
    """``tensor`` on ``device``: as it is when ``dtype`` is None, else in ``dtype`` if it is floating-point and
    never a view of the checkpoint's file. A tensor read from the file lives in memory torch did not allocate (its
    storage cannot be resized) and is copied; one the converter made (fused, cut to rows) is the model's own
    already and is converted or moved only if it must be."""
    if dtype is None:
        return tensor.to(device)
    owned = tensor.untyped_storage().resizable()
    return tensor.to(device, dtype if tensor.is_floating_point() else tensor.dtype, copy=not owned)


def _copy_floats(model: nn.Module, dtype: torch.dtype) -> None:
    """Replaces every floating-point parameter and buffer of ``model`` with a copy in ``dtype``."""
    for module in model.modules():
        tensors = [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]
        for name, tensor in tensors:
            if tensor.is_floating_point():
                copy = tensor.detach().to(dtype, copy=True)
                setattr(module, name, nn.Parameter(copy, requires_grad=False) if isinstance(tensor, nn.Parameter)
                        else copy)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype activations and non-linear weights run in: ``dtype`` itself, or fp32 for the int8 mode."""
    return torch.float32 if dtype == torch.int8 else dtype


def build_model(
    path: Path, family: ModelFamily, config: Any, device: torch.device, dtype: torch.dtype, backend: str,
    head_dim: int,
) -> tuple[nn.Module, Kernels]:
    """The kernels for ``device``/``dtype`` and ``family``'s module with ``path``'s weights, ready to run.

    ``dtype`` ``torch.int8`` is the int8 mode (``sie.quantization``, CPU only): the model loads as the checkpoint
    stores it, its linear layers take the folder's own integers (``sie_int8.safetensors``) or are quantized per
    channel one at a time, and only then is the rest copied into fp32. A bf16 checkpoint therefore peaks near its
    own size, not at four bytes per parameter; the integers are the same either way, as bf16 -> fp32 is exact.
    """
    if dtype == torch.int8 and device.type != "cpu":
        raise UnsupportedModelError(f"dtype int8 runs on the CPU only, not on {device}; use float16 or bfloat16")
    if dtype != torch.int8:
        kernels = resolve_kernels(device, dtype, backend, head_dim=head_dim)
        return load_model(path, family, config, kernels, device, dtype), kernels
    kernels = int8_kernels(device, backend, head_dim)
    model = load_model(path, family, config, kernels, device, None)
    integers = read_int8_weights(path)
    if integers is None and (Path(path) / PROVENANCE_FILE).is_file():
        logger.warning("%s was converted by an older sie and lacks %s: its linear layers are quantized per "
                       "channel instead of keeping the original file's integers; `sie models fetch-default "
                       "--force` adds them", path, INT8_WEIGHTS)
    quantize_model(model, None if integers is None else family.convert_checkpoint(integers.items(), config))
    _copy_floats(model, compute_dtype(dtype))
    return model, kernels
