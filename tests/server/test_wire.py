"""Body reading limits, msgpack/JSON decoding with field-naming errors, and Accept negotiation."""

from __future__ import annotations

import io
import json

import msgpack
import pytest

from sie.errors import InvalidInputError
from sie.server.errors import PayloadTooLargeError
from sie.server.wire import decode_body, encode_response, read_body, wants_msgpack


class CountingStream(io.BytesIO):
    """A body stream that remembers how many bytes were read from it."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.consumed = 0

    def read(self, size: int = -1) -> bytes:
        chunk = super().read(size)
        self.consumed += len(chunk)
        return chunk


def test_read_body_returns_a_body_within_the_limit():
    data = bytes(range(256)) * 1000
    assert read_body(CountingStream(data), len(data), len(data)) == data
    assert read_body(CountingStream(data), None, len(data)) == data


def test_a_declared_length_over_the_limit_reads_nothing():
    stream = CountingStream(b"x" * 1000)
    with pytest.raises(PayloadTooLargeError, match="1000 bytes"):
        read_body(stream, 1000, 999)
    assert stream.consumed == 0


def test_an_undeclared_body_stops_just_past_the_limit():
    limit = 200_000
    stream = CountingStream(b"x" * (10 * limit))
    with pytest.raises(PayloadTooLargeError):
        read_body(stream, None, limit)
    assert stream.consumed == limit + 1


@pytest.mark.parametrize("content_type", ["application/msgpack", "application/x-msgpack", "application/json", None])
def test_decode_follows_the_content_type(content_type):
    payload = {"query": {"id": "q", "text": "naïve café 東京"}, "items": [{"text": "😀"}], "options": {"top_k": 1}}
    body = msgpack.packb(payload, use_bin_type=True) if content_type and "msgpack" in content_type else \
        json.dumps(payload).encode()
    assert decode_body(body, content_type) == payload


@pytest.mark.parametrize(("body", "content_type", "field"), [
    (msgpack.packb({"items": [{"text": "ok"}, {"text": "PLACE"}]}).replace(b"\xa5PLACE", b"\xa2\xc3\x28"),
     "application/msgpack", "items[1].text"),
    (msgpack.packb({"query": {"text": "PLACE"}}).replace(b"\xa5PLACE", b"\xa1\xff"), "application/msgpack",
     "query.text"),
    (b'{"items": [{"text": "\\udfff"}]}', "application/json", "items[0].text"),
    (b'{"items": ["\xc3\x28"]}', "application/json", "body"),
])
def test_text_that_is_not_utf8_is_named_by_its_field(body, content_type, field):
    with pytest.raises(InvalidInputError, match="UTF-8") as raised:
        decode_body(body, content_type)
    assert raised.value.field == field


@pytest.mark.parametrize(("body", "content_type", "words"), [
    (b"", "application/json", "empty"),
    (b"\xc1", "application/msgpack", "msgpack"),
    (msgpack.packb({"a": 1}) + b"\x01", "application/msgpack", "msgpack"),
    (msgpack.packb({(1, 2): "an array as a key"}), "application/msgpack", "msgpack"),
    (b"[1, 2", "application/json", "JSON"),
    (b"[1, 2]", "application/json", "map"),
])
def test_malformed_bodies_raise_invalid_input_on_the_body(body, content_type, words):
    with pytest.raises(InvalidInputError, match=words) as raised:
        decode_body(body, content_type)
    assert raised.value.field == "body"


def test_msgpack_maps_may_have_keys_other_than_strings():
    # A client's metadata is its own: {2024: ...} is valid msgpack, whatever JSON allows.
    assert decode_body(msgpack.packb({"query": "q", 2024: "year"}), "application/msgpack") == {"query": "q",
                                                                                               2024: "year"}


@pytest.mark.parametrize(("accept", "default", "expected"), [
    (None, True, True), (None, False, False), ("*/*", True, True), ("application/json", True, False),
    ("application/msgpack", False, True), ("application/json;q=0.9, application/x-msgpack", True, True),
    ("text/html", False, False),
])
def test_wants_msgpack(accept, default, expected):
    assert wants_msgpack(accept, default) is expected


def test_encode_response_in_both_formats():
    payload = {"scores": [{"item_id": "a", "score": 0.5, "rank": 0}]}
    packed = encode_response(payload, as_msgpack=True)
    assert packed.mimetype == "application/msgpack" and msgpack.unpackb(packed.get_data()) == payload
    plain = encode_response(payload, as_msgpack=False, status=201)
    assert plain.mimetype == "application/json" and json.loads(plain.get_data()) == payload and plain.status_code == 201
