"""The repository root may sit first on sys.path (pytest, a REPL, gunicorn started there) without shadowing
any dependency: every importable module of this project lives under ``sie/``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _in_checkout(origin: str | None) -> bool:
    """Whether ``origin`` is a file of the checkout's own folders (not of a hidden one such as .venv)."""
    if not origin or not Path(origin).is_relative_to(ROOT):
        return False
    return not Path(origin).relative_to(ROOT).parts[0].startswith(".")


def _run(code: str, cwd: Path) -> str:
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip()


def test_transformers_hub_kernels_imports_with_the_repository_root_first():
    # transformers imports Hugging Face's `kernels` package from here when it is installed.
    origin = _run(
        f"import sys; sys.path.insert(0, {str(ROOT)!r}); import transformers.integrations.hub_kernels; "
        "kernels = sys.modules.get('kernels'); print(getattr(kernels, '__file__', '') or '')",
        cwd=ROOT,
    )
    assert not _in_checkout(origin), f"`kernels` was imported from the checkout: {origin}"


def test_no_top_level_folder_carries_the_import_name_of_an_installed_package(tmp_path):
    folders = sorted(path.parent.name for path in ROOT.glob("*/__init__.py"))
    # Found from outside the checkout, a name resolves only to what is installed (sie itself is, editable).
    found = _run(
        "import importlib.util, json; "
        f"print(json.dumps({{n: getattr(importlib.util.find_spec(n), 'origin', None) for n in {folders!r}}}))",
        cwd=tmp_path,
    )
    shadowed = {name: origin for name, origin in json.loads(found).items()
                if origin is not None and not _in_checkout(origin)}
    assert not shadowed, f"top-level folders shadow installed packages: {shadowed}"
