"""Embedding models behind the server: an Encoder fed by a batcher, and the encode endpoints.

- ``POST /v1/encode/{model}``: sie's encode API as sie-sdk 0.10.1 speaks it (CONTRACT.md): msgpack or JSON in by
  Content-Type, msgpack out unless Accept asks for JSON only; numpy arrays as msgpack-numpy maps (bytes keys
  ``nd``, ``type``, ``kind``, ``shape``, ``data``), one result per item in order, ids echoed;
- ``POST /embed``: text-embeddings-inference's ``{inputs, normalize?, truncate?, prompt_name?, dimensions?}`` ->
  ``[[float, ...], ...]``, on the first configured model that encodes;
- ``POST /v1/embeddings``: OpenAI's ``{model?, input, encoding_format?, dimensions?}`` -> ``{object: "list", data:
  [{object: "embedding", index, embedding}], model, usage}`` (the ``openai`` client with ``base_url``).

Concurrent requests for a model share packed batches through its batcher, as scoring requests do; a batch computes
the outputs its requests want (``encode_runner.EncodeRunner``). Everything a request can get wrong is checked
before it is queued.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from flask import Blueprint, Response, g, request

from sie.encoder import Encoder, RawOutputs
from sie.encoding.params import EncodeParams, parse_encode_params, parse_items
from sie.errors import InvalidInputError
from sie.server.connection import client_gone_check
from sie.server.encode_runner import EncodeRunner
from sie.server.errors import ResponseTooLargeError
from sie.server.routes import (
    check_item_count,
    check_truncation_direction,
    optional_field,
    request_map,
    required_field,
)
from sie.server.state import state
from sie.server.wire import encode_response, wants_msgpack

encoding = Blueprint("encoding", __name__)


def _encode_texts(model: str, texts: list[str], params: EncodeParams, field: str,
                  prefix: str = "") -> tuple[list[RawOutputs], int, Encoder]:
    """Encodes ``texts`` (the request's ``field``) with ``model`` through its batcher.

    Returns (raw outputs in input order, input tokens, the encoder). Everything is checked before the request
    is queued; phase times go to ``g.sie_phases`` for the response headers and metrics.
    """
    current = state()
    served = current.registry.get(model, task="encode")
    runner: EncodeRunner = served.encoding
    encoder = runner.encoder
    encoder.check_output_types(params.output_types, field=f"{prefix}output_types")
    if params.max_length is not None:
        encoder.check_max_length(params.max_length, f"{prefix}options.max_length")
    started = time.perf_counter()
    with served.batcher.slot() as slot:
        encoded = encoder.tokenize(texts, is_query=params.is_query, instruction=params.instruction,
                                   max_length=params.max_length, truncate=params.truncate, field=field)
        check_response_size(encoder, params.output_types, len(texts), encoded.num_tokens,
                            current.config.max_response_bytes)
        tokenized = time.perf_counter()
        remaining = current.config.request_timeout_s - (tokenized - g.sie_started)
        with runner.wanting(params.output_types):
            raw, timings = slot.run(encoded, max(remaining, 0.0), client_gone_check(request.environ))
    g.sie_phases = {"tokenize": tokenized - started, "queue": timings.queue_s, "inference": timings.inference_s}
    return list(raw), encoded.num_tokens, encoder


def check_response_size(encoder: Encoder, output_types: tuple[str, ...], items: int, tokens: int,
                        max_bytes: int) -> None:
    """Raises ResponseTooLargeError when the ``output_types`` of ``items`` texts of ``tokens`` tokens in all would
    hold more than ``max_bytes`` of float32 values: a multivector output is a row per token, and a request well
    within the body limit (16 MB of text, ~4M tokens) could otherwise make a worker build gigabytes before answering,
    every other request in the process at risk. Sparse outputs hold at most a weight and an index per token."""
    per_item = {"dense": encoder.dimensions.get("dense", 0), "sparse": 0, "multivector": 0}
    per_token = {"dense": 0, "sparse": 2, "multivector": encoder.dimensions.get("multivector", 0)}
    counts = {kind: items * per_item[kind] + tokens * per_token[kind] for kind in output_types}
    values = sum(counts.values())
    if 4 * values > max_bytes:
        detail = ", ".join(f"{kind}: {count:,}" for kind, count in counts.items())
        raise ResponseTooLargeError(
            f"the response would hold {4 * values / 2**20:,.1f} MiB of float32 values ({detail} values for "
            f"{items} items of {tokens:,} tokens), more than this server's --max-response-bytes "
            f"({max_bytes / 2**20:,.1f} MiB): send fewer or shorter items, or fewer output types")


def numpy_map(array: np.ndarray) -> dict[bytes, Any]:
    """``array`` as msgpack-numpy writes it and sie-sdk reads it: bytes keys, a numeric dtype code, raw bytes."""
    array = np.ascontiguousarray(array)
    return {b"nd": True, b"type": array.dtype.str, b"kind": b"", b"shape": list(array.shape),
            b"data": array.tobytes()}


def _on_wire(result: Mapping[str, Any], as_msgpack: bool) -> dict[str, Any]:
    """One encode result with its arrays as msgpack-numpy maps, or as lists for JSON."""
    convert = numpy_map if as_msgpack else np.ndarray.tolist
    item: dict[str, Any] = {"id": result["id"]} if "id" in result else {}
    for kind in ("dense", "multivector"):
        if kind in result:
            item[kind] = {"values": convert(result[kind])}
    if "sparse" in result:
        item["sparse"] = {"indices": convert(result["sparse"]["indices"]),
                          "values": convert(result["sparse"]["values"])}
    return item


@encoding.post("/v1/encode/<path:model>")
def encode(model: str) -> Response:
    """sie's encode API: ``{items, params?: {output_types, instruction, output_dtype, options}}`` ->
    ``{model, items: [{id?, dense?, sparse?, multivector?}], usage}``."""
    body = request_map()
    params = parse_encode_params(body.get("params"))
    raw_items = required_field(body, "items")
    if isinstance(raw_items, list):
        check_item_count(len(raw_items))
    items = parse_items(raw_items)
    raw, tokens, encoder = _encode_texts(model, items.texts, params, "items", prefix="params.")
    as_msgpack = wants_msgpack(request.headers.get("Accept"), default=True)
    results = [_on_wire(encoder.finish(outputs, params, item_id), as_msgpack)
               for outputs, item_id in zip(raw, items.ids, strict=True)]
    return encode_response({"model": model, "items": results, "usage": {"input_tokens": tokens}}, as_msgpack)


def _texts(body: Mapping[str, Any], key: str) -> list[str]:
    """A string or a non-empty list of strings under ``key``, at most ``max_items`` long."""
    value = required_field(body, key)
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not value:
        raise InvalidInputError(key, f"must be a string or a non-empty list of strings, got {value!r:.80}")
    check_item_count(len(value))
    for index, text in enumerate(value):
        if not isinstance(text, str):
            kind = "token ids are not supported, send text" if isinstance(text, (int, list)) else \
                f"must be a string, got {type(text).__name__}"
            raise InvalidInputError(f"{key}[{index}]", kind)
    return value


def _dimensions(body: Mapping[str, Any], model: str) -> int | None:
    """The request's ``dimensions`` (Matryoshka), checked against ``model``'s dense width before any work is queued."""
    dimensions = optional_field(body, "dimensions", int, None)
    if dimensions is not None:
        width = state().registry.get(model, task="encode").encoding.encoder.dimensions["dense"]
        if dimensions < 1 or dimensions > width:
            raise InvalidInputError("dimensions", f"must be from 1 to {width}, got {dimensions}")
    return dimensions


def _dense(raw: list[RawOutputs], dimensions: int | None, encoder: Encoder, params: EncodeParams) -> list[np.ndarray]:
    """Dense vectors, cut to their first ``dimensions`` (checked by ``_dimensions``) before normalisation when
    asked."""
    if dimensions is not None:
        raw = [{"dense": outputs["dense"][:dimensions]} for outputs in raw]
    return [encoder.finish(outputs, params)["dense"] for outputs in raw]


@encoding.post("/embed")
def embed_tei() -> Response:
    """text-embeddings-inference's embed: ``{inputs, normalize?, truncate?, prompt_name?, dimensions?}`` ->
    ``[[float, ...], ...]``, one vector per input, on the first configured model that encodes.

    ``normalize`` defaults to true and ``truncate`` to true (TEI's ``--auto-truncate``); only right truncation
    exists (the input's end is cut).
    """
    body = request_map()
    texts = _texts(body, "inputs")
    check_truncation_direction(body)
    prompt_name = optional_field(body, "prompt_name", str, None)
    model = state().registry.default_encoder()
    prompt = None
    if prompt_name is not None:
        prompts = state().registry.get(model, task="encode").encoding.encoder.settings.prompts
        if prompt_name not in prompts:
            raise InvalidInputError("prompt_name", f"{prompt_name!r:.80} is not one of the model's prompts: "
                                                   f"{', '.join(prompts) or 'none'}")
        prompt = prompts[prompt_name]
    params = EncodeParams(instruction=prompt, normalize=optional_field(body, "normalize", bool, True),
                          truncate=optional_field(body, "truncate", bool, True))
    dimensions = _dimensions(body, model)
    raw, _, encoder = _encode_texts(model, texts, params, "inputs")
    vectors = [vector.tolist() for vector in _dense(raw, dimensions, encoder, params)]
    return encode_response(vectors, wants_msgpack(request.headers.get("Accept"), default=False))


@encoding.post("/v1/embeddings")
def embeddings_openai() -> Response:
    """OpenAI's embeddings: ``{model?, input, encoding_format?: float | base64, dimensions?, user?}``.

    ``base64`` (what the openai client asks for by default) is the little-endian float32 bytes of each vector.
    Vectors have unit length, as OpenAI's do and TEI's OpenAI route returns them, whatever the model's own
    normalisation (and after cutting them to ``dimensions``).
    """
    body = request_map()
    model = optional_field(body, "model", str, "") or state().registry.default_encoder()
    texts = _texts(body, "input")
    encoding_format = optional_field(body, "encoding_format", str, "float")
    if encoding_format not in ("float", "base64"):
        raise InvalidInputError("encoding_format", f"must be 'float' or 'base64', got {encoding_format!r:.80}")
    dimensions = _dimensions(body, model)
    params = EncodeParams(normalize=True)
    raw, tokens, encoder = _encode_texts(model, texts, params, "input")
    vectors = _dense(raw, dimensions, encoder, params)
    data = [{"object": "embedding", "index": index,
             "embedding": vector.tolist() if encoding_format == "float"
             else base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")}
            for index, vector in enumerate(vectors)]
    payload = {"object": "list", "data": data, "model": model,
               "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
    return encode_response(payload, wants_msgpack(request.headers.get("Accept"), default=False))
