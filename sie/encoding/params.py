"""The encode request's parameters and items, checked once for the in-process API and the server alike, and the
output dtypes embeddings are returned in.

Output dtypes (sie-sdk's ``output_dtype``; sentence-transformers' ``precision`` names the same ones):

- ``float32``, ``float16``: the values as they are;
- ``int8``: each vector scaled so that its largest magnitude is 127 and rounded (cosine similarity is kept; the
  scale is the vector's own, so the result never depends on what else was in the batch);
- ``uint8``: ``int8 + 128``;
- ``ubinary``: one bit per dimension, set where the value is positive, packed eight to a byte (``np.packbits``,
  ``ceil(dim / 8)`` bytes);
- ``binary``: ``ubinary - 128`` as int8 (sentence-transformers' convention).

They apply to dense and multivector values; sparse weights stay float32.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sie.errors import InvalidInputError
from sie.inputs import check_profile, item_list, parse_bool, parse_text, positive_int

OUTPUT_TYPES = ("dense", "sparse", "multivector")
OUTPUT_DTYPES = ("float32", "float16", "int8", "uint8", "binary", "ubinary")
PARAMS = ("output_types", "instruction", "output_dtype", "options")
ENCODE_OPTIONS = ("is_query", "max_length", "truncate", "normalize", "profile")


@dataclass(frozen=True)
class EncodeParams:
    """One encode request's parameters.

    Attributes:
        output_types: the outputs wanted, in request order, each once.
        instruction: a prompt put before every input, in place of the model's query/document prompt.
        output_dtype: one of ``OUTPUT_DTYPES``.
        is_query: queries (True), documents (False) or neither (None): picks the model's prompt.
        max_length: tokens per input, special tokens included; None: the model's limit.
        truncate: cut longer inputs (True) or refuse them (``InputTooLongError``).
        normalize: L2-normalise dense and multivector vectors; None: as the model does.
    """

    output_types: tuple[str, ...] = ("dense",)
    instruction: str | None = None
    output_dtype: str = "float32"
    is_query: bool | None = None
    max_length: int | None = None
    truncate: bool = True
    normalize: bool | None = None


@dataclass(frozen=True)
class Items:
    """Texts to encode and the ids the caller gave them (None where it gave none)."""

    texts: list[str]
    ids: list[str | None]


def _name(field: str, key: str) -> str:
    return f"{field}.{key}" if field else key


def _map(value: Any, field: str, known: Sequence[str]) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidInputError(field or "params", f"must be a map, got {type(value).__name__}")
    unknown = sorted(str(key) for key in value if key not in known)
    if unknown:
        raise InvalidInputError(field or "params",
                                f"unknown key(s) {', '.join(unknown)}; supported: {', '.join(known)}")
    return value


def _output_types(value: Any, field: str) -> tuple[str, ...]:
    if value is None:
        return ("dense",)
    if isinstance(value, str) or not isinstance(value, Sequence) or not value:
        raise InvalidInputError(field, f"must be a non-empty list of {', '.join(OUTPUT_TYPES)}, got {value!r:.80}")
    for index, kind in enumerate(value):
        if kind not in OUTPUT_TYPES:
            raise InvalidInputError(f"{field}[{index}]", f"unknown output type {kind!r:.80}; expected one of "
                                                         f"{', '.join(OUTPUT_TYPES)}")
    return tuple(dict.fromkeys(value))


def parse_encode_params(params: Mapping[str, Any] | None, field: str = "params") -> EncodeParams:
    """Checks ``{output_types?, instruction?, output_dtype?, options?: {is_query, max_length, truncate, normalize}}``
    (sie-sdk's ``params``); every error names its field under ``field`` (``params.options.is_query``)."""
    params = _map(params, field, PARAMS)
    options = _map(params.get("options"), _name(field, "options"), ENCODE_OPTIONS)
    instruction = params.get("instruction")
    if instruction is not None and not isinstance(instruction, str):
        raise InvalidInputError(_name(field, "instruction"), f"must be a string, got {type(instruction).__name__}")
    dtype = params.get("output_dtype")
    if dtype is not None and dtype not in OUTPUT_DTYPES:
        raise InvalidInputError(_name(field, "output_dtype"), f"must be one of {', '.join(OUTPUT_DTYPES)}, "
                                                              f"got {dtype!r:.80}")
    option = _name(field, "options")
    check_profile(options.get("profile"), f"{option}.profile")
    # A null option is its default, as a missing one is.
    is_query, max_length, truncate, normalize = (options.get(key) for key in ("is_query", "max_length", "truncate",
                                                                               "normalize"))
    return EncodeParams(
        output_types=_output_types(params.get("output_types"), _name(field, "output_types")),
        instruction=instruction,
        output_dtype=dtype or "float32",
        is_query=None if is_query is None else parse_bool(is_query, f"{option}.is_query"),
        max_length=None if max_length is None else positive_int(max_length, f"{option}.max_length"),
        truncate=True if truncate is None else parse_bool(truncate, f"{option}.truncate"),
        normalize=None if normalize is None else parse_bool(normalize, f"{option}.normalize"),
    )


def parse_items(items: Any, field: str = "items") -> Items:
    """Checks a non-empty list of strings or Items ``{"id"?, "text", ...}`` (``item_list``); an error names
    ``items[i].text``."""
    items = item_list(items, field)
    if not items:
        raise InvalidInputError(field, "must not be empty")
    texts, ids = [], []
    for index, item in enumerate(items):
        text, item_id = parse_text(item, f"{field}[{index}]")
        texts.append(text)
        ids.append(item_id)
    return Items(texts=texts, ids=ids)


def quantize(values: np.ndarray, dtype: str) -> np.ndarray:
    """float32 ``values`` (one vector per last-axis row: ``(dim,)`` or ``(rows, dim)``) in ``dtype``."""
    if dtype == "float32":
        return np.ascontiguousarray(values, dtype=np.float32)
    if dtype == "float16":
        return values.astype(np.float16)
    if dtype in ("int8", "uint8"):
        largest = np.abs(values).max(axis=-1, keepdims=True)
        scaled = np.rint(values * (127.0 / np.where(largest > 0, largest, 1.0)))
        signed = np.clip(scaled, -127, 127).astype(np.int8)
        return signed if dtype == "int8" else (signed.astype(np.int16) + 128).astype(np.uint8)
    if dtype in ("binary", "ubinary"):
        packed = np.packbits(values > 0, axis=-1)
        return packed if dtype == "ubinary" else (packed.astype(np.int16) - 128).astype(np.int8)
    raise ValueError(f"unknown output dtype {dtype!r}; expected one of {', '.join(OUTPUT_DTYPES)}")


def l2_normalize(values: np.ndarray) -> np.ndarray:
    """Each last-axis vector of float32 ``values`` over its L2 norm (at least 1e-12, as torch's normalize)."""
    norms = np.linalg.norm(values, axis=-1, keepdims=True)
    return values / np.maximum(norms, 1e-12)
