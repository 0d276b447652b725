"""sie: an unpadded, variable-length cross-encoder reranking engine.

    >>> import sie
    >>> sie.rerank("What is Python?", ["Python is a programming language.", "Snakes are reptiles."])
"""

from sie.api import load, rerank, score
from sie.errors import (
    BackendError,
    InputTooLongError,
    InvalidInputError,
    ModelNotFoundError,
    SieError,
    UnsupportedModelError,
)
from sie.reranker import DEFAULT_MODEL, Reranker
from sie.version import __version__

__all__ = [
    "DEFAULT_MODEL",
    "BackendError",
    "InputTooLongError",
    "InvalidInputError",
    "ModelNotFoundError",
    "Reranker",
    "SieError",
    "UnsupportedModelError",
    "__version__",
    "load",
    "rerank",
    "score",
]
