"""Model resolution: a model id or path -> a local folder holding config.json and the weights.

Places, in order: an explicit path; the sie models directory (``SIE_MODELS_DIR``, default
``~/.cache/sie/models``, a model ``org/name`` at ``<dir>/org/name``); the Hugging Face cache; the Hub,
unless ``HF_HUB_OFFLINE`` or ``SIE_OFFLINE`` is set.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from sie.errors import ModelNotFoundError, first_line
from sie.models import checkpoint

logger = logging.getLogger(__name__)

# Config, tokenizer and safetensors weights (one file or shards with their index); .bin only when no safetensors.
# The .json files include a sentence-transformers folder's (modules.json, 1_Pooling/config.json); bge-m3's sparse
# and multivector heads are two small .pt files beside the checkpoint.
HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "sentencepiece.bpe.model", "sparse_linear.pt",
                "colbert_linear.pt"]


def models_dir() -> Path:
    """The sie models directory: ``$SIE_MODELS_DIR`` or ``~/.cache/sie/models``."""
    configured = os.environ.get("SIE_MODELS_DIR")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "sie" / "models"


def is_model_dir(path: Path) -> bool:
    """True when ``path`` holds a config and weights in a layout sie reads (``sie.models.checkpoint``)."""
    return (path / "config.json").is_file() and any((path / name).is_file() for name in checkpoint.LAYOUTS)


def folder_state(model: str | os.PathLike[str]) -> tuple[tuple[str, int, int], ...] | None:
    """What a local model's folder holds: (file, size, mtime_ns) of each file under it, sorted; None for a model that
    is no folder in the sie models directory nor a path (a hub id). Compared across time, it says whether the
    folder changed (a copy finished, a file replaced). A path is read as ``resolve_model`` reads it: ``~`` expanded,
    and one that is absolute or starts with ``.`` never looked for in the models directory."""
    try:
        explicit = Path(model).expanduser()
        is_path = explicit.is_absolute() or str(model).startswith(".")
        folder = next((place for place in ((explicit,) if is_path else (models_dir() / model, explicit))
                       if place.is_dir()), None)
    except (OSError, RuntimeError):  # a parent this process may not search, a ~user without a home: no folder seen
        return None
    if folder is None:
        return None
    state = []
    for directory, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(directory, name)
            try:
                stat = os.stat(path)
            except OSError:  # removed under the walk, or a broken link: its absence is the state
                continue
            state.append((os.path.relpath(path, folder), stat.st_size, stat.st_mtime_ns))
    return tuple(sorted(state))


def local_models() -> list[str]:
    """Ids of the models in the sie models directory (``org/name`` or ``name``), sorted."""
    root = models_dir()
    if not root.is_dir():
        return []
    # Hidden folders are fetches in progress (sie.hub.default_model stages there before renaming); symlinked folders
    # count (Path.glob does not follow them before Python 3.13).
    folders = []
    # The real folders on the way to each folder walked: a link back to one of them (``up -> ..``, or ``a/b -> ../b``
    # with ``b/a -> ../a``) would list every model again on each turn of the cycle; other links are followed.
    ancestors = {os.fspath(root): (os.path.realpath(root),)}
    for directory, subfolders, files in os.walk(root, followlinks=True):
        chain = ancestors.pop(directory)
        kept = []
        for name in subfolders:
            real = os.path.realpath(os.path.join(directory, name))
            if real not in chain:
                kept.append(name)
                ancestors[os.path.join(directory, name)] = (*chain, real)
        subfolders[:] = kept
        if "config.json" in files:
            folders.append(Path(directory).relative_to(root))
    return sorted(folder.as_posix() for folder in folders
                  if not any(part.startswith(".") for part in folder.parts) and is_model_dir(root / folder))


def offline() -> bool:
    """Whether sie may not download anything: ``HF_HUB_OFFLINE`` or ``SIE_OFFLINE`` is set to a true value."""
    return any(os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")
               for name in ("HF_HUB_OFFLINE", "SIE_OFFLINE"))


def _missing(path: Path) -> str:
    """What keeps an existing folder ``path`` from being a model folder, as `` (...)``; empty when there is none."""
    if not path.is_dir():
        return ""
    if not (path / "config.json").is_file():
        return " (a folder without config.json)"
    return f" (a folder without weights: none of {', '.join(checkpoint.LAYOUTS)})"


def _from_hf(model: str, local_only: bool) -> tuple[Path | None, str]:
    """``model``'s snapshot folder from the Hugging Face cache (``local_only``) or the Hub, or None and why not."""
    from huggingface_hub import snapshot_download

    try:
        path = Path(snapshot_download(model, allow_patterns=HUB_PATTERNS, local_files_only=local_only))
        if not is_model_dir(path):
            # Older repositories ship only pytorch_model.bin; fetched only then, never beside safetensors.
            path = Path(snapshot_download(model, allow_patterns=[*HUB_PATTERNS, checkpoint.PYTORCH_BIN],
                                          local_files_only=local_only))
    except Exception as error:  # huggingface_hub raises many types for "not there" and "unreachable"
        logger.debug("hugging face %s lookup of %s failed: %s", "cache" if local_only else "hub", model, error)
        return None, f"{type(error).__name__}: {first_line(error)[:200]}"
    return (path, "") if is_model_dir(path) else (None, f"{path}{_missing(path)}")


def resolve_model(model: str | os.PathLike[str]) -> Path:
    """Returns the local folder of ``model``; raises ModelNotFoundError naming every place looked at."""
    searched: list[str] = []
    explicit = Path(model).expanduser()
    if explicit.is_absolute() or str(model).startswith("."):
        searched.append(f"path {explicit}{_missing(explicit)}")
        if is_model_dir(explicit):
            return explicit
        raise ModelNotFoundError(str(model), searched)
    if is_model_dir(explicit):
        return explicit.resolve()
    searched.append(f"path {explicit.resolve()}{_missing(explicit)}")

    in_models_dir = models_dir() / str(model)
    searched.append(f"sie models directory {in_models_dir} (SIE_MODELS_DIR){_missing(in_models_dir)}")
    if is_model_dir(in_models_dir):
        return in_models_dir

    from huggingface_hub.constants import HF_HUB_CACHE

    cached, why = _from_hf(str(model), local_only=True)
    if cached is not None:
        return cached
    searched.append(f"Hugging Face cache {HF_HUB_CACHE} ({why})")

    if offline():
        searched.append("Hugging Face Hub (skipped: HF_HUB_OFFLINE or SIE_OFFLINE is set)")
    else:
        downloaded, why = _from_hf(str(model), local_only=False)
        if downloaded is not None:
            return downloaded
        searched.append(f"Hugging Face Hub ({why})")
    raise ModelNotFoundError(str(model), searched)
