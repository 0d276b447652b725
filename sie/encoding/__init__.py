"""Stage 1 of retrieval: embedding models on the packed engine (``sie.Encoder``, ``sie.encode``).

- ``folder``: what a sentence-transformers folder says (pooling, normalisation, prompts, length limit);
- ``m3``: bge-m3's sparse and multivector heads;
- ``params``: the encode request's parameters and items, and the output dtypes.

The bodies are the model families' (``sie.models``, task ``"encode"``); pooling is ``sie.models.pooling``.
"""

from sie.encoding.folder import EmbedderConfig, read_embedder_config
from sie.encoding.m3 import M3Heads
from sie.encoding.params import (
    OUTPUT_DTYPES,
    OUTPUT_TYPES,
    EncodeParams,
    Items,
    parse_encode_params,
    parse_items,
    quantize,
)

__all__ = [
    "OUTPUT_DTYPES",
    "OUTPUT_TYPES",
    "EmbedderConfig",
    "EncodeParams",
    "Items",
    "M3Heads",
    "parse_encode_params",
    "parse_items",
    "quantize",
    "read_embedder_config",
]
