"""Every kind of malformed request gets the contract's error body with the right status, never a 500, and the
server keeps serving afterwards.

The answers are checked in process; a real server checks what only it can show: that a body too large is
refused before it is read, and that its worker survives every bad request.
"""

from __future__ import annotations

import gzip
import json
import socket

import msgpack
import pytest

from tests.server.conftest import TINY_BERT

PATH = f"/v1/score/{TINY_BERT}"
MSGPACK = {"Content-Type": "application/msgpack"}
JSON = {"Content-Type": "application/json"}
GOOD = {"query": {"text": "what is python"}, "items": [{"text": "python is a language"}, {"text": "rain"}]}


def _packed(payload: object) -> bytes:
    return msgpack.packb(payload, use_bin_type=True)


def _bad_utf8_msgpack() -> bytes:
    # msgpack str type (0xa0 | length) holding bytes that are not UTF-8, at items[1].text.
    body = _packed({"query": "what", "items": [{"text": "fine"}, {"text": "PLACEHOLDER"}]})
    return body.replace(b"\xabPLACEHOLDER", b"\xa4\xff\xfeab")


CASES = [
    # name, body, headers, status, code, param, words in the message
    ("malformed msgpack", b"\xc1\x00\x01", MSGPACK, 400, "INVALID_INPUT", "body", "msgpack"),
    ("truncated msgpack", _packed(GOOD)[:-3], MSGPACK, 400, "INVALID_INPUT", "body", "msgpack"),
    ("malformed JSON", b'{"query": "what", "items": [', JSON, 400, "INVALID_INPUT", "body", "JSON"),
    ("JSON nested too deeply", b"[" * 100_000, JSON, 400, "INVALID_INPUT", "body", "nested too deeply"),
    ("msgpack nested too deeply", b"\x91" * 100_000 + b"\xc0", MSGPACK, 400, "INVALID_INPUT", "body", "msgpack"),
    ("body not a map", _packed(["what", "python"]), MSGPACK, 400, "INVALID_INPUT", "body", "map"),
    ("empty body", b"", MSGPACK, 400, "INVALID_INPUT", "body", "empty"),
    ("missing query", _packed({"items": ["a"]}), MSGPACK, 400, "INVALID_INPUT", "query", "required"),
    ("missing items", _packed({"query": "q"}), MSGPACK, 400, "INVALID_INPUT", "items", "required"),
    ("empty items", _packed({"query": "q", "items": []}), MSGPACK, 400, "INVALID_INPUT", "items", "empty"),
    ("items not a list", _packed({"query": "q", "items": "abc"}), MSGPACK, 400, "INVALID_INPUT", "items", "list"),
    ("item text of the wrong type", _packed({"query": "q", "items": ["a", "b", "c", {"text": 5}]}), MSGPACK,
     400, "INVALID_INPUT", "items[3].text", "string"),
    ("item without text", _packed({"query": "q", "items": [{"id": "x"}]}), MSGPACK, 400, "INVALID_INPUT",
     "items[0].text", "missing"),
    ("item id of the wrong type", _packed({"query": "q", "items": [{"id": 7, "text": "a"}]}), MSGPACK, 400,
     "INVALID_INPUT", "items[0].id", "string"),
    ("query of the wrong type", _packed({"query": 3, "items": ["a"]}), MSGPACK, 400, "INVALID_INPUT", "query",
     "string"),
    ("text as bytes", _packed({"query": "q", "items": [{"text": b"abc"}]}), MSGPACK, 400, "INVALID_INPUT",
     "items[0].text", "string"),
    ("non-UTF-8 text in msgpack", _bad_utf8_msgpack(), MSGPACK, 400, "INVALID_INPUT", "items[1].text", "UTF-8"),
    # Decoding again to name the bad string meets the other fault: it once escaped as a 500.
    ("non-UTF-8 text in malformed msgpack", _bad_utf8_msgpack() + b"\x00", MSGPACK, 400, "INVALID_INPUT", "body",
     "msgpack"),
    ("non-UTF-8 JSON body", b'{"query": "q", "items": ["\xff\xfe"]}', JSON, 400, "INVALID_INPUT", "body", "UTF-8"),
    ("lone surrogate in JSON", b'{"query": "q", "items": [{"text": "a\\ud800"}]}', JSON, 400, "INVALID_INPUT",
     "items[0].text", "UTF-8"),
    ("unknown options", _packed({**GOOD, "options": {"top_k": 1, "beam": 2, "temperature": 0}}), MSGPACK, 400,
     "INVALID_INPUT", "options", "beam, temperature"),
    ("options not a map", _packed({**GOOD, "options": [1]}), MSGPACK, 400, "INVALID_INPUT", "options", "map"),
    ("a profile sie does not serve", _packed({**GOOD, "options": {"profile": "sparse"}}), MSGPACK, 400,
     "INVALID_INPUT", "options.profile", "one profile, 'default'"),
    ("negative top_k", _packed({**GOOD, "options": {"top_k": -1}}), MSGPACK, 400, "INVALID_INPUT",
     "options.top_k", "positive"),
    ("max_length over the model's limit", _packed({**GOOD, "options": {"max_length": 100000}}), MSGPACK, 400,
     "INVALID_INPUT", "options.max_length", "512"),
    ("instruction of the wrong type", _packed({**GOOD, "instruction": ["x"]}), MSGPACK, 400, "INVALID_INPUT",
     "instruction", "string"),
    ("too long with truncate false", _packed({"query": "q", "items": ["a " * 600], "options": {"truncate": False}}),
     MSGPACK, 400, "INPUT_TOO_LONG", "items[0]", "512"),
    ("query too long with truncate false", _packed({"query": "a " * 600, "items": ["a"],
                                                    "options": {"truncate": False}}),
     MSGPACK, 400, "INPUT_TOO_LONG", "query", "512"),
    # A compressed body was read as msgpack or JSON, and refused for its bytes ("not valid UTF-8"), hiding why.
    ("gzip-compressed body", gzip.compress(json.dumps(GOOD).encode()),
     {**JSON, "Content-Encoding": "gzip"}, 400, "INVALID_INPUT", "Content-Encoding", "uncompressed"),
    ("more items than max_items", _packed({"query": "q", "items": ["a"] * 1001}), MSGPACK, 413, "TOO_MANY_ITEMS",
     None, "1000"),
]


@pytest.mark.parametrize(("name", "body", "headers", "status", "code", "param", "words"), CASES,
                         ids=[case[0] for case in CASES])
def test_bad_request_gets_its_status_code_and_message(client, name, body, headers, status, code, param, words):
    reply = client.request("POST", PATH, body, headers)
    assert reply.status == status, reply.body
    assert reply.headers["content-type"] == "application/json"
    detail = json.loads(reply.body)["detail"]
    assert detail["code"] == code and reply.headers["x-sie-error-code"] == code
    assert words in detail["message"]
    assert detail.get("param") == param


def test_a_bad_value_is_shown_cut_short(client):
    reply = client.request("POST", PATH, _packed({**GOOD, "options": {"top_k": "x" * 100_000}}), MSGPACK)
    assert reply.status == 400 and reply.data()["detail"]["param"] == "options.top_k"
    assert "got 'xxx" in reply.data()["detail"]["message"] and len(reply.body) < 500, len(reply.body)


def test_the_default_profile_is_the_one_sie_serves(client):
    """sie-sdk's options may select a model profile by name; the default one is the model as served."""
    plain = client.request("POST", PATH, _packed(GOOD), MSGPACK)
    named = client.request("POST", PATH, _packed({**GOOD, "options": {"profile": "default"}}), MSGPACK)
    assert named.status == plain.status == 200 and named.data()["scores"] == plain.data()["scores"]


def test_metadata_may_have_any_keys_msgpack_allows(client):
    body = {**GOOD, "items": [{"text": "a", "metadata": {2024: "year", 1.5: ["x"]}}, {"text": "b"}]}
    assert client.request("POST", PATH, _packed(body), MSGPACK).status == 200


def test_unknown_model_is_404_listing_the_available_ones(client):
    reply = client.post("/v1/score/BAAI/bge-reranker-v2-m3", GOOD)
    assert reply.status == 404
    detail = reply.data()["detail"]
    assert detail["code"] == "MODEL_NOT_FOUND"
    assert "BAAI/bge-reranker-v2-m3" in detail["message"] and TINY_BERT in detail["message"]
    assert TINY_BERT in detail["available"]


def _raw_exchange(port: int, head: bytes, body_parts: list[bytes]) -> bytes:
    """Sends ``head`` and ``body_parts`` on a fresh socket and returns what comes back within 10 s."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        for part in body_parts:
            try:
                sock.sendall(part)
            except (BrokenPipeError, ConnectionResetError):
                break  # the server answered and closed without reading everything: what we want to see
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
        return answer


def test_declared_body_over_the_limit_is_refused_before_it_is_sent(server):
    # Content-Length says 17 MiB but only the head goes out: an answer proves the body was never awaited.
    head = (f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/msgpack\r\n"
            f"Content-Length: {17 * 1024 * 1024}\r\n\r\n").encode()
    answer = _raw_exchange(server.port, head, [])
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.split()[1] == b"413", answer[:300]
    assert b"PAYLOAD_TOO_LARGE" in rest


def test_chunked_body_over_the_limit_is_refused_while_streaming(server):
    head = (f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/msgpack\r\n"
            f"Transfer-Encoding: chunked\r\n\r\n").encode()
    piece = b"a" * (1024 * 1024)
    chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    answer = _raw_exchange(server.port, head, [chunk] * 17 + [b"0\r\n\r\n"])
    assert answer.split(b"\r\n", 1)[0].split()[1] == b"413", answer[:300]
    assert b"PAYLOAD_TOO_LARGE" in answer


def test_unknown_path_and_wrong_method_get_json_errors(client):
    missing = client.get("/v2/score/x")
    assert missing.status == 404 and missing.data()["detail"]["code"] == "NOT_FOUND"
    wrong = client.get(PATH)
    assert wrong.status == 405 and wrong.data()["detail"]["code"] == "METHOD_NOT_ALLOWED"


def test_the_server_still_serves_after_every_bad_request(server):
    for name, body, headers, status, code, *_ in CASES:
        reply = server.client.request("POST", PATH, body, headers)
        assert (reply.status, reply.headers.get("x-sie-error-code")) == (status, code), name
    reply = server.client.post(PATH, GOOD)
    assert reply.status == 200
    assert sorted(entry["item_id"] for entry in reply.data()["scores"]) == ["item-0", "item-1"]
    metrics = server.client.get("/metrics").body.decode()
    assert 'status="500"' not in metrics
