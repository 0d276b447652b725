"""Whether a request's client is still connected, read off its socket without consuming anything from it.

The batcher asks while a request waits for its turn (``Slot.run``): a client that timed out and went away, or
retried elsewhere, would otherwise have its request run in full ahead of live ones. Its socket then reads as
closed (end of stream, or an error such as a reset). Bytes waiting on the socket are the client's next pipelined
request, so a client that sent them is still there.
"""

from __future__ import annotations

import select
import socket
from collections.abc import Callable, Mapping
from typing import Any


def client_gone_check(environ: Mapping[str, Any]) -> Callable[[], bool] | None:
    """A call that says whether the client of the WSGI request ``environ`` has closed its connection, or None
    where the server gives no plain socket to look at (Flask's test client, TLS)."""
    sock = environ.get("gunicorn.socket")
    if type(sock) is not socket.socket:  # None, or an SSLSocket, whose recv takes no flags
        return None

    def gone() -> bool:
        # poll first: a socket with a timeout (gunicorn's) waits for data in recv, MSG_DONTWAIT or not.
        poller = select.poll()
        try:
            poller.register(sock, select.POLLIN)
        except (OSError, ValueError):  # closed under us
            return True
        events = poller.poll(0)
        if not events:
            return False
        if events[0][1] & (select.POLLERR | select.POLLHUP | select.POLLNVAL):
            return True
        try:
            return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:  # a reset
            return True

    return gone
