"""gunicorn's threaded worker with a buffering front: a request thread only ever sees a complete request.

gunicorn's gthread worker hands a connection to a request thread as soon as its first bytes arrive, and the
thread then blocks until the headers and body are in. A few hundred clients that send half a request and stop
(slowloris) hold every thread, and the server stops answering. Here the worker's main loop, which already
multiplexes idle keep-alive connections with a selector, also reads each request: the bytes are collected
without blocking until the headers and the whole body (Content-Length or chunked) are buffered, and only then
does a request thread parse them from memory. A client gets ``read_timeout_s`` from connecting (or from the first
byte of a kept-alive connection's next request) to send all of it; past that it is answered 408. Headers past
64 KiB (431) and bodies past ``max_body_bytes`` (413) are refused by the loop too, so nothing incomplete
ever reaches a thread. What the buffers of all connections still reading hold is bounded by ``max_buffered_bytes``:
the request whose bytes would pass it is answered 503 RESOURCE_EXHAUSTED (sie-sdk retries it), so that many clients
sending large bodies slowly cannot exhaust the worker's memory. Connections are closed without blocking the loop:
the write side is shut, and whatever the client still sends is drained for at most two seconds so that it reads its
answer rather than a reset. Idle and slow connections cost a socket and a buffer, never a thread, so the batcher's
guarantees (bounded queue, deadlines) are all that limits admission. The one wait left to a request thread, writing
the answer to a client that does not read it, is bounded by ``write_timeout_s``.

Works on gunicorn 27's ``ThreadWorker`` (its ``TConn``, ``accept``, ``finish_request`` and keep-alive
bookkeeping), hence the pin in setup.py. TLS and cleartext HTTP/2, which sie serve does not configure, take
gthread's own path unchanged.
"""

from __future__ import annotations

import errno
import json
import selectors
import socket
import string
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from functools import partial
from http import HTTPStatus
from typing import Any

from gunicorn.workers.gthread import TConn, ThreadWorker

from sie.server.config import MAX_HEADER_BYTES, ServerConfig, max_chunk_framing_bytes
from sie.server.errors import BuffersFullError, PayloadTooLargeError, kind_of

_HEADER_END = b"\r\n\r\n"
_MAX_CHUNK_LINE_BYTES = 1024
_HEX_DIGITS = frozenset(string.hexdigits.encode())
_RECV_BYTES = 256 * 1024
_CONTINUE_REPLY = b"HTTP/1.1 100 Continue\r\n\r\n"
# How long a closing connection is drained (its client reading the answer) before it is closed regardless.
_LINGER_S = 2.0

INCOMPLETE, COMPLETE = 0, 1  # RequestScan verdicts besides an HTTP status to refuse with


@dataclass
class LoopStats:
    """What this process's worker loop holds of requests still arriving, and how many it answered itself with an
    error, by status, before any request thread saw them (``/metrics`` reports both)."""

    buffered_bytes: int = 0
    refused: Counter[int] = field(default_factory=Counter)


LOOP_STATS = LoopStats()  # one worker per process


def refusal(status: int, code: str, message: str, retry_after_s: int | None = None) -> bytes:
    """A whole HTTP/1.1 error response in the server's error format, closing the connection."""
    body = json.dumps({"detail": {"code": code, "message": message}}).encode()
    retry_after = "" if retry_after_s is None else f"Retry-After: {retry_after_s}\r\n"
    return (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nContent-Type: application/json\r\n"
            f"X-SIE-Error-Code: {code}\r\n{retry_after}Connection: close\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode() + body


class RequestScan:
    """Follows one HTTP/1.x request as its bytes arrive, resuming where it stopped (no rescans).

    ``verdict(buffer)`` is INCOMPLETE (wait for more), COMPLETE (a request thread may parse it without reading
    the socket; other malformed headers count, gunicorn's parser answers them 400 from what is buffered), or an
    HTTP status to refuse with, its reason in ``reason``: 400 for a malformed Content-Length or Transfer-Encoding
    and for malformed chunk framing (which the parser would meet only inside the application), 431 for headers or
    trailers past MAX_HEADER_BYTES, 413 for a body past ``max_body_bytes`` (as its Content-Length declares, or as
    its chunks arrive) or chunk framing past ``max_chunk_framing_bytes``. An incomplete request therefore never
    holds more than ``max_request_bytes`` plus one read.
    """

    def __init__(self, max_body_bytes: int) -> None:
        self.max_body_bytes = max_body_bytes
        self.reason = ""
        self._searched = 0  # where the search for the end of the headers resumes
        self._body_start: int | None = None
        self._length: int | None = None
        self._chunked = False
        self._position = 0  # the next chunk-size line
        self._data = 0  # chunk bytes so far, of whole chunks
        self._partial = 0  # the data so far of a chunk not yet whole

    def verdict(self, buffer: bytes | bytearray) -> int:
        if self._body_start is None:
            end = buffer.find(_HEADER_END, max(0, self._searched - 3))
            self._searched = len(buffer)
            if end < 0:
                return self._headers_too_large() if len(buffer) > MAX_HEADER_BYTES else INCOMPLETE
            if end > MAX_HEADER_BYTES:
                return self._headers_too_large()
            self._body_start = self._position = end + len(_HEADER_END)
            problem = self._read_framing(bytes(buffer[:end]))
            if problem is not None:
                return self._refuse(400, f"malformed request headers: {problem}")
        if self._chunked:
            verdict = self._scan_chunks(buffer)
            framing = len(buffer) - self._body_start - self._data - self._partial
            if verdict == INCOMPLETE and framing > max_chunk_framing_bytes(self.max_body_bytes):
                return self._refuse(413, f"the chunked body's framing (chunk-size lines and trailers) is larger than "
                                         f"{max_chunk_framing_bytes(self.max_body_bytes)} bytes; send larger chunks")
            return verdict
        if self._length is None:
            return COMPLETE
        if self._length > self.max_body_bytes:
            return self._body_too_large()
        return COMPLETE if len(buffer) - self._body_start >= self._length else INCOMPLETE

    def _refuse(self, status: int, reason: str) -> int:
        self.reason = reason
        return status

    def _headers_too_large(self) -> int:
        return self._refuse(431, f"the request headers are larger than {MAX_HEADER_BYTES} bytes")

    def _body_too_large(self) -> int:
        return self._refuse(413, f"the body is larger than {self.max_body_bytes} bytes")

    def _read_framing(self, head: bytes) -> str | None:
        """Reads the body's framing from the headers; what is wrong with it, or None. (Other malformed headers go to
        gunicorn's parser, which answers them 400 from what is buffered.)"""
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                if self._length is not None:
                    return "Content-Length is given twice"
                if not value.strip().isdigit():
                    return f"Content-Length is not a number of bytes: {value.strip().decode('latin-1')!r:.40}"
                self._length = int(value)
            elif name == b"transfer-encoding":
                self._chunked = b"chunked" in value.lower()
        if self._chunked and self._length is not None:
            return "Content-Length and Transfer-Encoding: chunked together"
        return None

    def _scan_chunks(self, buffer: bytes | bytearray) -> int:
        while True:
            line_end = buffer.find(b"\r\n", self._position)
            if line_end < 0:
                if len(buffer) - self._position > _MAX_CHUNK_LINE_BYTES:
                    return self._refuse(400, f"malformed chunked body: a chunk-size line is longer than "
                                             f"{_MAX_CHUNK_LINE_BYTES} bytes")
                return INCOMPLETE
            token = bytes(buffer[self._position:line_end]).split(b";")[0].strip()
            if not token or not set(token) <= _HEX_DIGITS:
                return self._refuse(400, "malformed chunked body: a chunk size is not hexadecimal")
            size = int(token, 16)
            if size == 0:
                # Optional trailer lines, then an empty line.
                if buffer.startswith(b"\r\n", line_end + 2) or buffer.find(_HEADER_END, line_end) >= 0:
                    return COMPLETE
                if len(buffer) - line_end > MAX_HEADER_BYTES:
                    return self._refuse(431, f"the chunked body's trailers are larger than {MAX_HEADER_BYTES} bytes")
                return INCOMPLETE
            if self._data + size > self.max_body_bytes:
                return self._body_too_large()
            chunk_end = line_end + 2 + size + 2
            if chunk_end > len(buffer):
                self._partial = min(size, len(buffer) - line_end - 2)
                return INCOMPLETE
            self._data += size
            self._partial = 0
            self._position = chunk_end


def expects_continue(buffer: bytes | bytearray) -> bool:
    """Whether ``buffer`` holds complete HTTP/1.1 headers with ``Expect: 100-continue`` (the client waits for a
    ``100 Continue`` before it sends the body; curl does for bodies over 1 KB)."""
    end = buffer.find(_HEADER_END)
    if end < 0:
        return False
    request_line, *lines = bytes(buffer[:end]).lstrip(b"\r\n").split(b"\r\n")
    if not request_line.endswith(b"HTTP/1.1"):
        return False
    for line in lines:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"expect" and value.strip().lower() == b"100-continue":
            return True
    return False


class BufferedConn(TConn):
    """A gthread connection that remembers the bytes read so far and when they must be complete."""

    def __init__(self, cfg: Any, sock: socket.socket, client: Any, server: Any, config: ServerConfig) -> None:
        super().__init__(cfg, sock, client, server)
        self.config = config
        self.start_reading()

    def start_reading(self, pending: bytes = b"") -> None:
        self.buffer = bytearray(pending)
        self.scan = RequestScan(self.config.max_body_bytes)
        self.read_deadline = time.monotonic() + self.config.read_timeout_s
        self.continued = False

    def init(self) -> None:
        super().init()
        # Runs in the request thread, for every request on the connection (gthread made the socket blocking). The
        # request is in memory already: the timeout bounds writing the answer to a client that stops reading it.
        self.sock.settimeout(self.config.write_timeout_s)
        if self.buffer:
            self.parser.unreader.unread(bytes(self.buffer))
            self.buffer = bytearray()


class BufferingThreadWorker(ThreadWorker):
    """gthread whose main loop reads each request in full before a request thread takes it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config = ServerConfig.from_env()
        self.reading_conns: deque[BufferedConn] = deque()
        self.lingering: deque[tuple[float, socket.socket]] = deque()
        self.buffering = not self.cfg.is_ssl and self.cfg.http2_cleartext == "off"

    def set_accept_enabled(self, enabled: bool) -> None:
        """gthread's; a stopping worker also closes its listening sockets. The arbiter has closed its own, so once every
        stopping worker has, a new connection is refused at once (clients retry elsewhere) instead of waiting in the
        listen backlog, which nobody accepts from, for up to the graceful timeout and then being reset."""
        super().set_accept_enabled(enabled)
        if not enabled and not self.alive:
            for listener in self.sockets:
                listener.close()

    def accept(self, listener: socket.socket) -> None:
        if not self.buffering:
            return super().accept(listener)
        try:
            client_sock, client_addr = listener.accept()
        except OSError as error:
            if error.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        conn = BufferedConn(self.cfg, client_sock, client_addr, listener.getsockname(), self.config)
        self._read_request(conn)

    def on_client_socket_readable(self, conn: TConn, client: socket.socket) -> None:
        if not self.buffering:
            return super().on_client_socket_readable(conn, client)
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._read_request(conn)
        # Read what made it readable now: a stopping worker's murder_pending closes a connection that has sent nothing,
        # and a request already on its way would get no answer (gthread answers it, with Connection: close).
        self.on_request_bytes(conn, client)

    def _read_request(self, conn: BufferedConn, pending: bytes = b"") -> None:
        """Puts ``conn`` on the poller until its next request is buffered in full."""
        conn.sock.setblocking(False)
        conn.start_reading(pending)
        # Registered first: a socket the poller refuses is neither counted nor left among the reading ones.
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self.on_request_bytes, conn))
        self.reading_conns.append(conn)
        LOOP_STATS.buffered_bytes += len(pending)
        if pending:
            self._judge(conn)

    def on_request_bytes(self, conn: BufferedConn, client: socket.socket) -> None:
        try:
            data = client.recv(_RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client went away before finishing its request
            self._stop_reading(conn)
            self._close(conn)
            return
        conn.buffer += data
        LOOP_STATS.buffered_bytes += len(data)
        self._judge(conn)

    def _judge(self, conn: BufferedConn) -> None:
        verdict = conn.scan.verdict(conn.buffer)
        if verdict == COMPLETE:  # its bytes leave the buffers now, whatever they held
            self._dispatch(conn)
        elif verdict != INCOMPLETE:  # a request that can never succeed gets its own error, not a retryable 503
            code = {413: kind_of(PayloadTooLargeError("")).code, 400: "INVALID_INPUT",
                    431: "REQUEST_HEADER_FIELDS_TOO_LARGE"}[verdict]
            self._refuse(conn, verdict, code, conn.scan.reason)
        elif LOOP_STATS.buffered_bytes > self.config.max_buffered_bytes:
            kind = kind_of(BuffersFullError(""))
            self._refuse(conn, kind.status, kind.code, f"the worker's buffers for requests still arriving are past "
                                                       f"their bound of {self.config.max_buffered_bytes} bytes; retry "
                                                       "later",
                         kind.retry_after_s)
        elif not conn.continued and expects_continue(conn.buffer):
            # The body comes only after this; gunicorn's own 100 Continue, sent later, is a second interim
            # response, which HTTP/1.1 clients accept.
            conn.continued = True
            try:
                conn.sock.send(_CONTINUE_REPLY)
            except OSError:
                pass

    def _dispatch(self, conn: BufferedConn) -> None:
        self._stop_reading(conn)
        conn.data_ready = True
        if conn.parser is not None:  # a kept-alive connection: its parser reads from the buffer first
            conn.parser.unreader.unread(bytes(conn.buffer))
            conn.buffer = bytearray()
        self.enqueue_req(conn)

    def _stop_reading(self, conn: BufferedConn) -> None:
        self.reading_conns.remove(conn)
        LOOP_STATS.buffered_bytes -= len(conn.buffer)
        try:
            self.poller.unregister(conn.sock)
        except (KeyError, ValueError, OSError):
            pass

    def _refuse(self, conn: BufferedConn, status: int, code: str, message: str,
                retry_after_s: int | None = None) -> None:
        """Answers ``conn``'s unfinished request with an error (``refusal``), counted in LOOP_STATS, and closes it."""
        self._stop_reading(conn)
        LOOP_STATS.refused[status] += 1
        try:
            # A few hundred bytes: the socket's send buffer takes them at once.
            conn.sock.send(refusal(status, code, message, retry_after_s))
        except OSError:
            pass
        self._close(conn)

    def _close(self, conn: TConn) -> None:
        """Closes ``conn`` without blocking the loop: shut the write side, then drain what the client still sends
        (so that the kernel does not answer it with a reset before it read our answer) until it closes, or for
        _LINGER_S at most."""
        self.nr_conns -= 1
        sock = conn.sock
        try:
            sock.setblocking(False)
            sock.shutdown(socket.SHUT_WR)
            self.poller.register(sock, selectors.EVENT_READ, self._drain)
        except (OSError, ValueError, KeyError):  # already closed or reset: nothing to wait for
            self._close_socket(sock)
            return
        self.lingering.append((time.monotonic() + _LINGER_S, sock))

    def _drain(self, sock: socket.socket) -> None:
        try:
            if sock.recv(_RECV_BYTES):
                return
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            pass
        self.poller.unregister(sock)
        self._close_socket(sock)  # its deque entry goes when it expires

    @staticmethod
    def _close_socket(sock: socket.socket) -> None:
        try:
            sock.close()
        except OSError:
            pass

    def handle_request(self, req: Any, conn: TConn) -> bool:
        """gthread's, but a client that stops reading its answer for ``--write-timeout`` is logged in one line and
        its connection closed (gthread logs the timeout as a socket error, with a traceback)."""
        try:
            return super().handle_request(req, conn)
        except TimeoutError:
            self.log.info("closed the connection of %s: it did not read its answer within %g s", conn.client,
                          self.config.write_timeout_s)
            return False

    def finish_request(self, conn: TConn, fs: Any) -> None:
        if not self.buffering:
            return super().finish_request(conn, fs)
        try:
            keep_alive = not fs.cancelled() and fs.exception() is None and fs.result()
            if keep_alive is True and self.alive and conn.parser.unreader.buf.getvalue():
                # The request read ahead into the next one: those bytes start the next request's buffer.
                self._read_request(conn, conn.parser.unreader.take_buffered())
            elif keep_alive is True or keep_alive is False:
                if keep_alive:
                    super().finish_request(conn, fs)  # back to the poller as an idle keep-alive connection
                else:
                    self._close(conn)
            else:  # gthread's _DEFER, which a buffered connection never returns; keep its handling
                super().finish_request(conn, fs)
        except Exception:
            self.log.exception("finishing a request failed; closing its connection")
            self._close(conn)

    def murder_pending(self) -> None:
        """Also answers 408 to connections whose request did not arrive in full within the bound (at shutdown,
        idle ones go at once), and closes lingering sockets past their drain time."""
        super().murder_pending()
        now = time.monotonic()
        expired = [conn for conn in self.reading_conns
                   if conn.read_deadline <= now or (not self.alive and not conn.buffer)]
        late = [conn for conn in expired if conn.buffer]
        idle = [conn for conn in expired if not conn.buffer]  # at shutdown, sent nothing of a request: no answer
        for conn in late:
            self._refuse(conn, 408, "REQUEST_TIMEOUT", f"the request did not arrive within "
                                                       f"{self.config.read_timeout_s:g} s")
        for conn in idle:
            self._stop_reading(conn)
            self._close(conn)
        if late:
            self.log.info("closed %d connection(s) whose request did not arrive within %g s", len(late),
                          self.config.read_timeout_s)
        if idle:
            self.log.info("closed %d idle connection(s): the worker is stopping", len(idle))
        while self.lingering and self.lingering[0][0] <= now:
            _, sock = self.lingering.popleft()
            if sock.fileno() >= 0:
                try:
                    self.poller.unregister(sock)
                except (KeyError, ValueError, OSError):
                    pass
                self._close_socket(sock)
