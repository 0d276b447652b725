"""sie: an unpadded, variable-length cross-encoder reranking engine, and the embedding models of the stage before.

    >>> import sie
    >>> sie.rerank("What is Python?", ["Python is a programming language.", "Snakes are reptiles."])
    >>> sie.encode("BAAI/bge-m3", {"text": "What is Python?"}, is_query=True)["dense"]
"""

from sie.api import encode, load, load_encoder, rerank, score
from sie.encoder import Encoder
from sie.errors import (
    BackendError,
    InputTooLongError,
    InvalidInputError,
    ModelNotFoundError,
    SieError,
    UnsupportedModelError,
)
from sie.onednn import bound_kernel_caches
from sie.reranker import DEFAULT_MODEL, Reranker
from sie.version import __version__

# Before the first bf16 or int8 matmul: reading sie needs no oneDNN kernel.
bound_kernel_caches()

__all__ = [
    "DEFAULT_MODEL",
    "BackendError",
    "Encoder",
    "InputTooLongError",
    "InvalidInputError",
    "ModelNotFoundError",
    "Reranker",
    "SieError",
    "UnsupportedModelError",
    "__version__",
    "encode",
    "load",
    "load_encoder",
    "rerank",
    "score",
]
