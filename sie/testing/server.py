"""``sie serve`` as a child process on a free loopback port, and a small HTTP client for it.

Used by the server's tests and by benchmarks/bench_server.py: both talk to a real gunicorn, not to Flask's
test client.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass(frozen=True)
class Reply:
    """One HTTP response: status, headers (lower-case names) and body."""

    status: int
    headers: dict[str, str]
    body: bytes

    def data(self) -> Any:
        """The body decoded by its Content-Type (msgpack or JSON)."""
        if "msgpack" in self.headers.get("content-type", ""):
            return msgpack.unpackb(self.body, raw=False)
        return json.loads(self.body)


class HttpClient:
    """Keep-alive HTTP/1.1 to one server, one connection per calling thread."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout_s: float = 120.0) -> None:
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        self._local = threading.local()

    def _connection(self) -> http.client.HTTPConnection:
        if getattr(self._local, "connection", None) is None:
            self._local.connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
        return self._local.connection

    def _drop(self) -> None:
        self._local.connection.close()
        self._local.connection = None

    def _send(self, method: str, path: str, body: bytes | None, headers: Mapping[str, str] | None) -> Reply:
        connection = self._connection()
        try:
            connection.request(method, path, body=body, headers=dict(headers or {}))
            response = connection.getresponse()
        except OSError:
            self._drop()  # a half-used connection cannot send again
            raise
        reply = Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
        if reply.headers.get("connection", "").lower() == "close":
            self._drop()
        return reply

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: Mapping[str, str] | None = None) -> Reply:
        """Sends one request (scoring is idempotent: a kept-alive connection the server closed is retried once)."""
        try:
            return self._send(method, path, body, headers)
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
            return self._send(method, path, body, headers)

    def post(self, path: str, payload: Any, *, msgpack_in: bool = True, accept: str | None = None,
             headers: Mapping[str, str] | None = None) -> Reply:
        """POSTs ``payload`` as msgpack (sie-sdk's way) or JSON; ``accept`` sets the Accept header."""
        if msgpack_in:
            body = msgpack.packb(payload, use_bin_type=True)
            sent = {"Content-Type": "application/msgpack"}
        else:
            body = json.dumps(payload).encode()
            sent = {"Content-Type": "application/json"}
        if accept is not None:
            sent["Accept"] = accept
        sent.update(headers or {})
        return self.request("POST", path, body, sent)

    def get(self, path: str, headers: Mapping[str, str] | None = None) -> Reply:
        return self.request("GET", path, headers=headers)


class ServerProcess:
    """``python -m sie.server ARGS`` on a free port; ``start`` returns once ``/readyz`` answers 200."""

    def __init__(self, args: Sequence[str] = (), env: Mapping[str, str] | None = None,
                 command: Sequence[str] = (sys.executable, "-m", "sie.server")) -> None:
        self.port = free_port()
        self.command = [*command, "--host", "127.0.0.1", "--port", str(self.port), *args]
        self.env = {**os.environ, **(env or {})}
        self._log = tempfile.NamedTemporaryFile(prefix="sie-serve-", suffix=".log", delete=False)
        self.process: subprocess.Popen[bytes] | None = None
        self.client = HttpClient(self.port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> str:
        """Everything the server wrote to stdout and stderr so far."""
        return Path(self._log.name).read_text(errors="replace")

    def start(self, ready_timeout_s: float = 180.0, wait_ready: bool = True) -> ServerProcess:
        self.process = subprocess.Popen(self.command, env=self.env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + ready_timeout_s
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log}")
            try:
                reply = self.client.get("/healthz" if not wait_ready else "/readyz")
                if reply.status == 200:
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"server not ready after {ready_timeout_s} s:\n{self.log}")
            time.sleep(0.1)

    def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM (graceful: in-flight requests finish) and wait; returns the exit status."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def __enter__(self) -> ServerProcess:
        return self if self.process is not None else self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
        os.unlink(self._log.name)
