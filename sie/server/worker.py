"""gunicorn's threaded worker with a buffering front: a request thread only ever sees a complete request.

gunicorn's gthread worker hands a connection to a request thread as soon as its first bytes arrive, and the
thread then blocks until the headers and body are in. A few hundred clients that send half a request and stop
(slowloris) hold every thread, and the server stops answering. Here the worker's main loop, which already
multiplexes idle keep-alive connections with a selector, also reads each request: the bytes are collected
without blocking until the headers and the whole body (Content-Length or chunked) are buffered, and only then
does a request thread parse them from memory. A client gets ``read_timeout_s`` from its first byte (or from
connecting) to send all of it; past that it is answered 408 and closed. Idle and slow connections cost a socket
and a buffer, never a thread, so the batcher's guarantees (bounded queue, deadlines) are all that limits
admission.

Works on gunicorn 27's ``ThreadWorker`` (its ``TConn``, ``accept``, ``finish_request`` and keep-alive
bookkeeping), hence the pin in setup.py. TLS and cleartext HTTP/2, which sie serve does not configure, take
gthread's own path unchanged.
"""

from __future__ import annotations

import errno
import selectors
import socket
import time
from collections import deque
from functools import partial
from typing import Any

from gunicorn.workers.gthread import TConn, ThreadWorker

from sie.server.config import ServerConfig

_HEADER_END = b"\r\n\r\n"
# Headers longer than this are handed to gunicorn's parser as they are, which answers 431/400 for them.
_MAX_HEADER_BYTES = 64 * 1024
_RECV_BYTES = 256 * 1024
_CONTINUE_REPLY = b"HTTP/1.1 100 Continue\r\n\r\n"
_REQUEST_TIMEOUT_REPLY = b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"


def request_complete(buffer: bytes | bytearray, max_body_bytes: int) -> bool:
    """Whether ``buffer`` holds a whole HTTP/1.x request (headers and body), or enough for the parser to refuse
    it without reading on (headers past their limit, a body past ``max_body_bytes``, a malformed length)."""
    end = buffer.find(_HEADER_END)
    if end < 0:
        return len(buffer) > _MAX_HEADER_BYTES
    body_start = end + len(_HEADER_END)
    content_length, chunked = None, False
    for line in bytes(buffer[:end]).split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            if content_length is not None or not value.strip().isdigit():
                return True
            content_length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
    if chunked:
        return _chunked_body_complete(buffer, body_start, max_body_bytes)
    if content_length is None:
        return True
    return content_length > max_body_bytes or len(buffer) - body_start >= content_length


def expects_continue(buffer: bytes | bytearray) -> bool:
    """Whether ``buffer`` holds complete HTTP/1.1 headers with ``Expect: 100-continue`` (the client waits for a
    ``100 Continue`` before it sends the body; curl does for bodies over 1 KB)."""
    end = buffer.find(_HEADER_END)
    if end < 0:
        return False
    request_line, *lines = bytes(buffer[:end]).split(b"\r\n")
    if not request_line.endswith(b"HTTP/1.1"):
        return False
    for line in lines:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"expect" and value.strip().lower() == b"100-continue":
            return True
    return False


def _chunked_body_complete(buffer: bytes | bytearray, start: int, max_body_bytes: int) -> bool:
    """Walks the chunk sizes from ``start``: complete at the zero-size chunk and the blank line after it."""
    position = start
    while True:
        line_end = buffer.find(b"\r\n", position)
        if line_end < 0:
            return False
        try:
            size = int(bytes(buffer[position:line_end]).split(b";")[0].strip(), 16)
        except ValueError:
            return True  # malformed: the parser answers 400
        position = line_end + 2
        if size == 0:
            # Optional trailer lines, then an empty line.
            return buffer.startswith(b"\r\n", position) or buffer.find(_HEADER_END, position - 2) >= 0
        if position - start > max_body_bytes:
            return True
        position += size + 2
        if position > len(buffer):
            return False


class BufferedConn(TConn):
    """A gthread connection that remembers the bytes read so far and when they must be complete."""

    def __init__(self, cfg: Any, sock: socket.socket, client: Any, server: Any, read_timeout_s: float) -> None:
        super().__init__(cfg, sock, client, server)
        self.buffer = bytearray()
        self.read_timeout_s = read_timeout_s
        self.read_deadline = 0.0
        self.continued = False

    def start_reading(self, pending: bytes = b"") -> None:
        self.buffer = bytearray(pending)
        self.read_deadline = time.monotonic() + self.read_timeout_s
        self.continued = False

    def init(self) -> None:
        super().init()
        # The request thread's reads and writes are bounded too: a response the client does not read, or a body
        # the parser was handed early (one past max_body_bytes), cannot hold the thread forever.
        self.sock.settimeout(self.read_timeout_s)
        if self.buffer:
            self.parser.unreader.unread(bytes(self.buffer))
            self.buffer = bytearray()


class BufferingThreadWorker(ThreadWorker):
    """gthread whose main loop reads each request in full before a request thread takes it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        config = ServerConfig.from_env()
        self.read_timeout_s = config.read_timeout_s
        self.max_body_bytes = config.max_body_bytes
        self.reading_conns: deque[BufferedConn] = deque()
        self.buffering = not self.cfg.is_ssl and self.cfg.http2_cleartext == "off"

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
        conn = BufferedConn(self.cfg, client_sock, client_addr, listener.getsockname(), self.read_timeout_s)
        self._read_request(conn)

    def on_client_socket_readable(self, conn: TConn, client: socket.socket) -> None:
        if not self.buffering:
            return super().on_client_socket_readable(conn, client)
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._read_request(conn)

    def _read_request(self, conn: BufferedConn, pending: bytes = b"") -> None:
        """Puts ``conn`` on the poller until its next request is buffered in full."""
        conn.sock.setblocking(False)
        conn.start_reading(pending)
        self.reading_conns.append(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self.on_request_bytes, conn))
        if pending and request_complete(conn.buffer, self.max_body_bytes):
            self._dispatch(conn)

    def on_request_bytes(self, conn: BufferedConn, client: socket.socket) -> None:
        try:
            data = client.recv(_RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client went away before finishing its request
            self._drop(conn)
            return
        conn.buffer += data
        if request_complete(conn.buffer, self.max_body_bytes):
            self._dispatch(conn)
        elif not conn.continued and expects_continue(conn.buffer):
            # The body comes only after this; gunicorn's own 100 Continue, sent later, is a second interim
            # response, which HTTP/1.1 clients accept.
            conn.continued = True
            try:
                client.send(_CONTINUE_REPLY)
            except OSError:
                pass

    def _dispatch(self, conn: BufferedConn) -> None:
        self.poller.unregister(conn.sock)
        self.reading_conns.remove(conn)
        conn.data_ready = True
        if conn.parser is not None:  # a kept-alive connection: its parser reads from the buffer first
            conn.parser.unreader.unread(bytes(conn.buffer))
            conn.buffer = bytearray()
        self.enqueue_req(conn)

    def _drop(self, conn: BufferedConn, reply: bytes = b"") -> None:
        self.reading_conns.remove(conn)
        try:
            self.poller.unregister(conn.sock)
        except (KeyError, ValueError, OSError):
            pass
        if reply:
            try:
                conn.sock.send(reply)
            except OSError:
                pass
        self.nr_conns -= 1
        conn.close()

    def finish_request(self, conn: TConn, fs: Any) -> None:
        # A request that read ahead into the next one leaves those bytes in the parser: they start the next
        # request's buffer instead of a request thread waiting for the rest on the socket.
        if (self.buffering and self.alive and not fs.cancelled() and fs.exception() is None
                and fs.result() is True and conn.parser.unreader.buf.getvalue()):
            self._read_request(conn, conn.parser.unreader.take_buffered())
            return
        super().finish_request(conn, fs)

    def murder_pending(self) -> None:
        """Also closes, with a 408, connections whose request did not arrive in full within the bound."""
        super().murder_pending()
        now = time.monotonic()
        closed = 0
        while self.reading_conns and self.reading_conns[0].read_deadline <= now:
            conn = self.reading_conns[0]
            self._drop(conn, _REQUEST_TIMEOUT_REPLY if conn.buffer else b"")
            closed += 1
        if closed:
            self.log.info("closed %d connection(s) whose request did not arrive within %g s", closed,
                          self.read_timeout_s)
