"""Bytes on the wire: bounded body reading, msgpack/JSON decoding and response content negotiation.

sie-sdk sends msgpack and decodes every 2xx body as msgpack; curl users send and ask for JSON. The request
format follows Content-Type, the response format follows Accept (CONTRACT.md).
"""

from __future__ import annotations

import json
from typing import IO, Any

import msgpack
from flask import Response

from sie.server.errors import PayloadTooLargeError
from sie.errors import InvalidInputError
from sie.inputs import NOT_UTF8, is_utf8_text

MSGPACK = "application/msgpack"
JSON = "application/json"
_CHUNK = 64 * 1024


def read_body(stream: IO[bytes], content_length: int | None, limit: int) -> bytes:
    """Reads at most ``limit`` bytes; a larger declared or streamed body raises PayloadTooLargeError.

    A declared ``Content-Length`` over the limit is refused before anything is read; a chunked body is
    read in pieces and refused as soon as it passes the limit.
    """
    if content_length is not None and content_length > limit:
        raise PayloadTooLargeError(f"request body is {content_length} bytes, more than the limit of {limit}")
    parts: list[bytes] = []
    size = 0
    while True:
        chunk = stream.read(min(_CHUNK, limit + 1 - size))
        if not chunk:
            return b"".join(parts)
        parts.append(chunk)
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"request body is more than the limit of {limit} bytes")


def check_content_encoding(encoding: str | None) -> None:
    """InvalidInputError naming ``Content-Encoding`` unless the body comes as it is: a compressed one (gzip) is not
    decompressed here, and decoding its bytes as msgpack or JSON would fail with a message that hides why."""
    if encoding and encoding.strip().lower() != "identity":
        raise InvalidInputError("Content-Encoding", f"{encoding!r:.80} is not supported; send the body uncompressed")


def is_msgpack(media_type: str | None) -> bool:
    """True for application/msgpack and its aliases (x-msgpack, vnd.msgpack)."""
    return media_type is not None and "msgpack" in media_type.lower()


def _check_text(value: Any, path: str) -> None:
    """Raises InvalidInputError naming the first string under ``value`` that is not valid UTF-8."""
    if isinstance(value, str):
        if not is_utf8_text(value):
            raise InvalidInputError(path, NOT_UTF8)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_text(item, f"{path}[{index}]")


def decode_body(body: bytes, content_type: str | None) -> dict[str, Any]:
    """The request map, from msgpack when ``content_type`` says so, else from JSON.

    Raises InvalidInputError (field ``body``, or the path of a string that is not UTF-8).
    """
    try:
        return _decode(body, content_type)
    except RecursionError:
        # json.loads and the UTF-8 walk recurse per level: a body of 100,000 "[" is a client's mistake.
        raise InvalidInputError("body", "is nested too deeply") from None


def _unpack(body: bytes, **options: Any) -> Any:
    """``body`` as msgpack; InvalidInputError when it is not, except for a string that is not UTF-8
    (UnicodeDecodeError, for the caller to name). Map keys may be any hashable value: ``metadata`` is the client's
    own, and ``{2024: ...}`` is valid msgpack."""
    try:
        return msgpack.unpackb(body, raw=False, strict_map_key=False, **options)
    except UnicodeDecodeError:
        raise
    except (ValueError, TypeError, msgpack.UnpackException) as error:
        raise InvalidInputError("body", f"is not valid msgpack ({type(error).__name__})") from None


def _decode(body: bytes, content_type: str | None) -> dict[str, Any]:
    if not body:
        raise InvalidInputError("body", "is empty; expected a map with query and items")
    if is_msgpack(content_type):
        try:
            data = _unpack(body)
        except UnicodeDecodeError:
            # Decode again keeping the bad bytes as surrogates, to name the field that holds them.
            _check_text(_unpack(body, unicode_errors="surrogateescape"), "")
            raise InvalidInputError("body", "contains a string that is not valid UTF-8") from None
    else:
        try:
            data = json.loads(body)
        except UnicodeDecodeError:
            raise InvalidInputError("body", "is not valid UTF-8") from None
        except ValueError as error:
            raise InvalidInputError("body", f"is not valid JSON: {error}") from None
        # JSON escapes can still spell lone surrogates ("\ud800"), which no tokenizer accepts.
        _check_text(data, "")
    if not isinstance(data, dict):
        raise InvalidInputError("body", f"must be a map, got {type(data).__name__}")
    return data


def wants_msgpack(accept: str | None, default: bool) -> bool:
    """Whether the response is msgpack: Accept naming msgpack wins, then JSON, else ``default``."""
    if accept:
        if is_msgpack(accept):
            return True
        if JSON in accept.lower():
            return False
    return default


def check_encodable(value: Any, as_msgpack: bool, field: str) -> None:
    """InvalidInputError naming ``field`` when a value a request sent cannot go back in its answer: bytes or an
    extension type in JSON, NaN or Infinity in strict JSON, a key that is not UTF-8 or an integer past 64 bits in
    msgpack."""
    try:
        if as_msgpack:
            msgpack.packb(value, use_bin_type=True)
        else:
            json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, OverflowError):  # a UnicodeEncodeError is a ValueError
        raise InvalidInputError(field, "holds a value that cannot be returned as "
                                       f"{MSGPACK if as_msgpack else JSON}") from None


def encode_response(payload: Any, as_msgpack: bool, status: int = 200) -> Response:
    """``payload`` as a msgpack or JSON response."""
    if as_msgpack:
        return Response(msgpack.packb(payload, use_bin_type=True), status=status, mimetype=MSGPACK)
    return Response(json.dumps(payload), status=status, mimetype=JSON)
