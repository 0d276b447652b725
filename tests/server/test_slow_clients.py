"""Slow and idle clients against a real gunicorn: they hold sockets, never request threads.

``RequestScan`` (what the worker's main loop waits for before a thread takes a connection) is checked on
its own; then a server with a 3-s read bound faces 300 connections that sent half their headers (slowloris), and
requests dribbled in pieces, pipelined, chunked and oversized, and bodies sent slowly by many clients at once, which
the worker holds up to a bound; and a client that stops reading its answer.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator

import msgpack
import pytest

from sie.server.config import MAX_HEADER_BYTES, max_chunk_framing_bytes, max_request_bytes
from sie.server.worker import COMPLETE, INCOMPLETE, RequestScan, expects_continue
from sie.testing.server import ServerProcess
from tests.server.conftest import TINY_BERT, tiny_server

READ_TIMEOUT_S = 3
MAX_BODY = 1 << 20
MAX_BUFFERED = 3 * MAX_BODY
SCORE = {"query": {"text": "what is python"}, "items": [{"text": "python is a language"}]}


@pytest.mark.parametrize(("buffer", "verdict"), [
    (b"GET /healthz HTTP/1.1\r\nHost: a\r\n", INCOMPLETE),
    (b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n", COMPLETE),
    (b"POST /x HTTP/1.1\r\nContent-Length: 5\r\n\r\nabcd", INCOMPLETE),
    (b"POST /x HTTP/1.1\r\nContent-Length: 5\r\n\r\nabcde", COMPLETE),
    (b"POST /x HTTP/1.1\r\ncontent-length: 5\r\n\r\nabcdefGET", COMPLETE),  # pipelined bytes after the body
    (b"POST /x HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % MAX_BODY, INCOMPLETE),  # exactly the limit: waits
    (b"POST /x HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY + 1), 413),  # refused before any body
    # Malformed framing: answered 400 in the server's format (gunicorn's parser would answer in HTML).
    (b"POST /x HTTP/1.1\r\nContent-Length: x\r\n\r\n", 400),
    (b"POST /x HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
    (b"POST /x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\na", 400),
    (b"POST /x HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    (b"GET /x HTTP/1.1\r\nBad Header Line\r\n\r\n", COMPLETE),  # other malformed headers: the parser's 400
    (b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\n", INCOMPLETE),
    (b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\n0\r\n", INCOMPLETE),
    (b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\n0\r\n\r\n", COMPLETE),
    (b"POST /x HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n1\r\na\r\n0\r\n\r\n", COMPLETE),
    (b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;x=1\r\nabcde\r\n0\r\nT: 1\r\n\r\n", COMPLETE),
    (b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
    (b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n-6\r\n", 400),  # a sign is malformed too
    (b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFF\r\nabc", 413),  # declared past the limit
    # One chunk of the largest body, half of it in: its data is not framing.
    (b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n" % MAX_BODY + b"a" * (MAX_BODY // 2), INCOMPLETE),
    (b"POST /x HTTP/1.1\r\n" + b"X: " + b"a" * 70_000, 431),  # headers past their limit
])
def test_request_scan_verdicts(buffer, verdict):
    scan = RequestScan(MAX_BODY)
    assert scan.verdict(buffer) == verdict
    assert bool(scan.reason) == (verdict not in (INCOMPLETE, COMPLETE)), "a refusal says why, and only a refusal"


def test_an_unfinished_request_never_holds_more_than_a_request_may_take():
    """Chunks of one byte stay far below --max-body-bytes in data but not in framing: 413 comes before the buffer
    passes max_request_bytes (so a lone request is never refused for the worker's buffers), while a finished
    request with as much framing is still complete."""
    head = b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    scan, buffer = RequestScan(MAX_BODY), bytearray(head)
    while (verdict := scan.verdict(buffer)) == INCOMPLETE:
        buffer += b"1\r\na\r\n" * 1000
    assert verdict == 413 and "framing" in scan.reason
    assert len(buffer) <= max_request_bytes(MAX_BODY) and len(buffer) < 2 * max_chunk_framing_bytes(MAX_BODY)
    finished = head + b"1\r\na\r\n" * (max_chunk_framing_bytes(MAX_BODY) // 5) + b"0\r\n\r\n"
    assert RequestScan(MAX_BODY).verdict(finished) == COMPLETE


def test_request_scan_counts_chunk_data_not_framing_and_resumes_where_it_stopped():
    scan = RequestScan(max_body_bytes=10)
    head = b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    ten_one_byte_chunks = b"1\r\na\r\n" * 10  # 10 bytes of data in 60 bytes of framing
    buffer = bytearray(head)
    assert scan.verdict(buffer) == INCOMPLETE
    for piece in (ten_one_byte_chunks[:25], ten_one_byte_chunks[25:], b"0\r\n", b"\r\n"):
        verdict_before = scan.verdict(buffer)
        assert verdict_before == INCOMPLETE
        buffer += piece
    assert scan.verdict(buffer) == COMPLETE
    assert RequestScan(max_body_bytes=10).verdict(head + b"1\r\na\r\n" * 11) == 413


@pytest.mark.parametrize(("buffer", "expects"), [
    (b"POST /x HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n", False),  # headers not complete
    (b"POST /x HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 5\r\n\r\n", True),
    (b"POST /x HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n", False),  # HTTP/1.0 ignores it
    (b"POST /x HTTP/1.1\r\nContent-Length: 5\r\n\r\n", False),
    (b"\r\nPOST /x HTTP/1.1\r\nExpect: 100-continue\r\n\r\n", True),  # the blank line HTTP allows first
])
def test_expects_continue(buffer, expects):
    assert expects_continue(buffer) is expects


def _score_request(body: bytes, extra_headers: str = "") -> bytes:
    return (f"POST /v1/score/{TINY_BERT} HTTP/1.1\r\nHost: a\r\nContent-Type: application/msgpack\r\n"
            f"{extra_headers}Content-Length: {len(body)}\r\n\r\n").encode() + body


def _read_response(conn: socket.socket, timeout_s: float = 10.0) -> bytes:
    """One whole response (headers and Content-Length body) from ``conn``, after any interim (1xx) ones."""
    conn.settimeout(timeout_s)
    data = b""
    while True:
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            assert chunk, f"connection closed after {data!r}"
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 1"):
            break
        data = body
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length"))
    while len(body) < length:
        body += conn.recv(65536)
    return head + b"\r\n\r\n" + body


def _loop_metric(server: ServerProcess, name: str, status: str | None = None) -> float:
    """The value of one of the worker loop's metrics (``sie_buffered_request_bytes``, ``sie_loop_refusals_total``)."""
    labels = "" if status is None else f'status="{status}",'
    found = re.search(rf'^{name}{{{labels}worker="[0-9]+"}} (\S+)$', server.client.get("/metrics").body.decode(),
                      re.MULTILINE)
    return float(found.group(1)) if found else 0.0


@pytest.fixture(scope="module")
def bounded_server(tiny_models_dir) -> Iterator[ServerProcess]:
    with tiny_server(tiny_models_dir, "--read-timeout", str(READ_TIMEOUT_S), "--max-body-bytes", str(MAX_BODY),
                     "--max-buffered-bytes", str(MAX_BUFFERED)) as server:
        yield server


def test_300_slow_connections_neither_block_the_server_nor_stay_open(bounded_server):
    timed_out_before = _loop_metric(bounded_server, "sie_loop_refusals_total", "408")
    slow = []
    for _ in range(300):
        conn = socket.create_connection(("127.0.0.1", bounded_server.port))
        conn.sendall(f"POST /v1/score/{TINY_BERT} HTTP/1.1\r\nHost: a\r\n".encode())
        slow.append(conn)
    opened = time.monotonic()
    try:
        started = time.monotonic()
        assert bounded_server.client.get("/healthz").status == 200
        assert time.monotonic() - started < 1.0
        started = time.monotonic()
        reply = bounded_server.client.post(f"/v1/score/{TINY_BERT}", SCORE)
        assert reply.status == 200, reply.body
        assert time.monotonic() - started < 5.0
        # Past the bound every slow connection gets a 408 and is closed.
        for conn in slow:
            conn.settimeout(READ_TIMEOUT_S + 5)
            answer = conn.recv(4096)
            assert answer.startswith(b"HTTP/1.1 408"), answer
            assert conn.recv(4096) == b""
        assert time.monotonic() - opened >= READ_TIMEOUT_S - 0.5, "closed before the bound"
    finally:
        for conn in slow:
            conn.close()
    assert bounded_server.client.get("/healthz").status == 200
    assert _loop_metric(bounded_server, "sie_loop_refusals_total", "408") == timed_out_before + 300


def test_a_body_that_stops_halfway_is_closed_after_the_bound(bounded_server):
    request = _score_request(msgpack.packb(SCORE))
    with socket.create_connection(("127.0.0.1", bounded_server.port)) as conn:
        conn.sendall(request[:-5])
        conn.settimeout(READ_TIMEOUT_S + 5)
        assert conn.recv(4096).startswith(b"HTTP/1.1 408")


def test_a_request_dribbled_in_pieces_within_the_bound_is_answered(bounded_server):
    request = _score_request(msgpack.packb(SCORE))
    with socket.create_connection(("127.0.0.1", bounded_server.port)) as conn:
        for start in range(0, len(request), 7):
            conn.sendall(request[start:start + 7])
            time.sleep(0.01)
        response = _read_response(conn)
    assert response.startswith(b"HTTP/1.1 200"), response


def test_a_client_that_expects_100_continue_gets_it_before_it_sends_the_body(bounded_server):
    request = _score_request(msgpack.packb(SCORE), "Expect: 100-continue\r\n")
    head, _, body = request.partition(b"\r\n\r\n")
    with socket.create_connection(("127.0.0.1", bounded_server.port)) as conn:
        conn.sendall(head + b"\r\n\r\n")
        conn.settimeout(READ_TIMEOUT_S - 1)
        assert conn.recv(4096) == b"HTTP/1.1 100 Continue\r\n\r\n"
        conn.sendall(body)
        response = _read_response(conn)
    assert response.startswith(b"HTTP/1.1 200"), response


def test_pipelined_and_kept_alive_requests_are_each_answered(bounded_server):
    request = _score_request(msgpack.packb(SCORE))
    with socket.create_connection(("127.0.0.1", bounded_server.port)) as conn:
        conn.sendall(request + request[:20])  # a whole request and the start of the next
        first = _read_response(conn)
        time.sleep(0.2)
        conn.sendall(request[20:])
        second = _read_response(conn)
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
        third = _read_response(conn)
    assert first.startswith(b"HTTP/1.1 200") and second.startswith(b"HTTP/1.1 200"), (first, second)
    assert first.partition(b"\r\n\r\n")[2] == second.partition(b"\r\n\r\n")[2]
    assert third.startswith(b"HTTP/1.1 200")


def test_a_chunked_body_is_answered(bounded_server):
    body = msgpack.packb(SCORE)
    chunks = b"".join(f"{len(part):x}\r\n".encode() + part + b"\r\n" for part in (body[:10], body[10:])) + b"0\r\n\r\n"
    head = (f"POST /v1/score/{TINY_BERT} HTTP/1.1\r\nHost: a\r\nContent-Type: application/msgpack\r\n"
            "Transfer-Encoding: chunked\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", bounded_server.port)) as conn:
        conn.sendall(head + chunks)
        response = _read_response(conn)
    assert response.startswith(b"HTTP/1.1 200"), response


def test_a_body_past_the_limit_is_refused_without_waiting_for_it(bounded_server):
    with socket.create_connection(("127.0.0.1", bounded_server.port)) as conn:
        conn.sendall(f"POST /v1/score/{TINY_BERT} HTTP/1.1\r\nHost: a\r\nContent-Type: application/msgpack\r\n"
                     f"Content-Length: {MAX_BODY + 1}\r\n\r\n".encode())
        started = time.monotonic()
        response = _read_response(conn)
    assert response.startswith(b"HTTP/1.1 413"), response
    assert time.monotonic() - started < READ_TIMEOUT_S


def test_malformed_and_oversized_requests_are_answered_and_the_worker_keeps_serving(bounded_server):
    chunked = (f"POST /v1/score/{TINY_BERT} HTTP/1.1\r\nHost: a\r\nContent-Type: application/msgpack\r\n"
               "Transfer-Encoding: chunked\r\n\r\n").encode()
    cases = [(chunked + b"-6\r\n", b"400"),  # a signed chunk size once sent the loop round forever
             (chunked + b"FFFFFFFFFF\r\n" + b"a" * 1000, b"413"),  # a chunk declared past the limit
             (chunked + b"1\r\na\r\n" * 50_000, b"413"),  # 50 KB of data in 250 KB of framing
             (b"GET /healthz HTTP/1.1\r\n" + b"X-Pad: " + b"a" * (MAX_HEADER_BYTES + 10) + b"\r\n", b"431"),
             (f"POST /v1/score/{TINY_BERT} HTTP/1.1\r\nContent-Length: abc\r\n\r\n".encode(), b"400")]
    for request, status in cases:
        with socket.create_connection(("127.0.0.1", bounded_server.port)) as conn:
            conn.sendall(request)
            answer = _read_response(conn, timeout_s=READ_TIMEOUT_S - 1)
        assert answer.split(b" ", 2)[1] == status, answer[:200]
        assert b"Content-Type: application/json" in answer and b'{"detail": {"code": ' in answer, answer[:300]
        started = time.monotonic()
        assert bounded_server.client.get("/healthz").status == 200
        assert time.monotonic() - started < 1.0


def test_heads_within_the_loops_bound_pass_gunicorns_own_smaller_limits(bounded_server):
    """A 10-KB header, 150 header lines and a 5,000-byte URL are all under the 64-KiB head the loop allows: gunicorn's
    defaults (8,190-byte fields, 100 of them, a 4,094-byte request line) refused them in HTML."""
    heads = [b"GET /healthz HTTP/1.1\r\nX-Big: " + b"a" * 10_000 + b"\r\n",
             b"GET /healthz HTTP/1.1\r\n" + b"".join(b"X-%d: a\r\n" % i for i in range(150)),
             b"GET /healthz?" + b"a" * 5_000 + b" HTTP/1.1\r\n"]
    for head in heads:
        with socket.create_connection(("127.0.0.1", bounded_server.port)) as conn:
            conn.sendall(head + b"Host: a\r\n\r\n")
            answer = _read_response(conn)
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]


def test_clients_that_never_close_after_connection_close_do_not_stall_the_worker(bounded_server):
    request = _score_request(msgpack.packb(SCORE), "Connection: close\r\n")
    lingering = []
    try:
        for _ in range(3):
            conn = socket.create_connection(("127.0.0.1", bounded_server.port))
            conn.sendall(request)
            assert _read_response(conn).startswith(b"HTTP/1.1 200")
            lingering.append(conn)  # read its answer, never closes
        started = time.monotonic()
        assert bounded_server.client.get("/healthz").status == 200
        assert time.monotonic() - started < 1.0
    finally:
        for conn in lingering:
            conn.close()


def test_the_bytes_of_unfinished_requests_are_bounded_across_connections(bounded_server):
    """Three clients stall after 900 KiB of a 1-MiB body each and a fourth fills the buffers to just under
    --max-buffered-bytes (3 MiB): a request that can never succeed still gets its own error (413), not a 503 to
    retry forever. With the fourth gone, a large request gets 503 RESOURCE_EXHAUSTED with Retry-After while a small
    one is still answered; once the stalled clients are gone the large request goes through. /metrics shows the
    bytes held and the refusal."""
    large = {"query": {"text": "what is python"}, "items": [{"text": "python is a language " * 30_000}]}
    large_request = _score_request(msgpack.packb(large))
    assert MAX_BUFFERED - 3 * 900 * 1024 < len(large_request) < MAX_BODY
    too_large = f"POST /v1/score/{TINY_BERT} HTTP/1.1\r\nHost: a\r\nContent-Length: {MAX_BODY + 1}\r\n\r\n".encode()
    head = (f"POST /v1/score/{TINY_BERT} HTTP/1.1\r\nHost: a\r\nContent-Type: application/msgpack\r\n"
            f"Content-Length: {MAX_BODY}\r\n\r\n").encode()
    stalled = []
    try:
        for _ in range(3):
            stalled.append(socket.create_connection(("127.0.0.1", bounded_server.port)))
            stalled[-1].sendall(head + b"a" * (900 * 1024))
        time.sleep(0.5)  # the worker's loop has read them
        held = _loop_metric(bounded_server, "sie_buffered_request_bytes")
        assert held >= 3 * 900 * 1024
        # The fourth: half of too_large's headers short of the bound, so that they take the buffers past it.
        stalled.append(socket.create_connection(("127.0.0.1", bounded_server.port)))
        stalled[-1].sendall(head.ljust(MAX_BUFFERED - int(held) - len(too_large) // 2, b"a"))
        deadline = time.monotonic() + 1.0
        while _loop_metric(bounded_server, "sie_buffered_request_bytes") < MAX_BUFFERED - len(too_large) // 2:
            assert time.monotonic() < deadline, "the worker did not read the fourth client's bytes"
            time.sleep(0.02)
        with socket.create_connection(("127.0.0.1", bounded_server.port)) as conn:
            conn.sendall(too_large)
            response = _read_response(conn)
        assert response.startswith(b"HTTP/1.1 413"), response[:300]
        stalled.pop().close()  # room again for a small request's headers, which may arrive before its body
        while _loop_metric(bounded_server, "sie_buffered_request_bytes") > held:
            assert time.monotonic() < deadline + 1.0, "the worker did not free the fourth client's bytes"
            time.sleep(0.02)

        refused_before = _loop_metric(bounded_server, "sie_loop_refusals_total", "503")
        with socket.create_connection(("127.0.0.1", bounded_server.port)) as conn:
            try:
                conn.sendall(large_request)
            except (BrokenPipeError, ConnectionResetError):
                pass  # refused before it was all sent; the answer is waiting
            response = _read_response(conn)
        assert response.startswith(b"HTTP/1.1 503"), response[:300]
        assert b"X-SIE-Error-Code: RESOURCE_EXHAUSTED" in response and b"Retry-After: 1" in response
        assert bounded_server.client.post(f"/v1/score/{TINY_BERT}", SCORE).status == 200
        assert _loop_metric(bounded_server, "sie_loop_refusals_total", "503") == refused_before + 1
    finally:
        for conn in stalled:
            conn.close()
    time.sleep(0.5)  # the worker sees them go
    with socket.create_connection(("127.0.0.1", bounded_server.port)) as conn:
        conn.sendall(large_request)
        assert _read_response(conn).startswith(b"HTTP/1.1 200")
    assert _loop_metric(bounded_server, "sie_buffered_request_bytes") == 0


def test_a_client_that_stops_reading_its_answer_is_cut_off_after_the_write_timeout(tiny_models_dir):
    """A request thread blocked on a client that does not read a 24-MB answer (4 MB of control characters, which
    JSON writes as 6-byte escapes) gives up after --write-timeout, logs one line instead of a traceback, and the
    worker keeps serving meanwhile and after."""
    body = msgpack.packb({"query": "q", "texts": ["\x01" * 4000] * 1000, "return_text": True})
    request = (f"POST /rerank HTTP/1.1\r\nHost: a\r\nContent-Type: application/msgpack\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    with tiny_server(tiny_models_dir, "--write-timeout", "1", "--max-body-bytes", str(8 << 20)) as server:
        with socket.socket() as conn:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: a small window
            conn.connect(("127.0.0.1", server.port))
            conn.sendall(request)
            deadline = time.monotonic() + 60
            while "did not read its answer within 1 s" not in server.log:
                assert time.monotonic() < deadline, server.log[-3000:]
                assert server.client.get("/healthz").status == 200
                time.sleep(0.2)
            conn.settimeout(10)
            received = 0
            try:
                while data := conn.recv(1 << 20):
                    received += len(data)
            except ConnectionResetError:
                pass
        assert 0 < received < 24_000_000, "the answer was cut off, after its first bytes"
        assert "Socket error processing request" not in server.log and "Traceback" not in server.log, server.log
        assert server.client.post("/rerank", {"query": "q", "texts": ["a", "b"]}).status == 200
