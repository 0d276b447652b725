"""Fixtures of the server tests: tiny random checkpoints in a models directory, and real servers on them.

The default-settings server is shared by the whole session; servers with special settings live in the one
module that needs them. Tiny models keep start-up and requests fast
where the real model is not the point.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sie import Reranker
from sie.testing.server import ServerProcess
from sie.testing import make_random_checkpoint

TINY_BERT = "test/tiny-bert"
TINY_XLMR = "test/tiny-xlmr"


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sie models directory holding ``test/tiny-bert`` and ``test/tiny-xlmr``."""
    root = tmp_path_factory.mktemp("sie-models")
    make_random_checkpoint(root / TINY_BERT, "bert", seed=3)
    make_random_checkpoint(root / TINY_XLMR, "xlm-roberta", seed=4)
    return root


def tiny_server(models_dir: Path, *args: str, **kwargs) -> ServerProcess:
    """A server on CPU over ``models_dir`` that loads ``test/tiny-bert`` unless ``args`` name other models."""
    models = () if "--model" in args else ("--model", TINY_BERT)
    return ServerProcess(["--device", "cpu", *models, *args],
                         env={"SIE_MODELS_DIR": str(models_dir), "HF_HUB_OFFLINE": "1"}, **kwargs)


@pytest.fixture(scope="session")
def server(tiny_models_dir: Path) -> Iterator[ServerProcess]:
    """The default-settings server on test/tiny-bert (test/tiny-xlmr loads on demand)."""
    with tiny_server(tiny_models_dir) as running:
        yield running


@pytest.fixture(scope="session")
def tiny_reranker(tiny_models_dir: Path) -> Reranker:
    """test/tiny-bert in process: the reference for the server's scores."""
    return Reranker(str(tiny_models_dir / TINY_BERT), device="cpu")
