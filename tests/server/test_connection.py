"""Telling from a request's socket whether its client is still connected."""

from __future__ import annotations

import socket
import time

from sie.server.connection import client_gone_check


def test_a_connected_client_is_there_and_one_that_closed_or_shut_its_side_is_gone():
    for leave in (socket.socket.close, lambda sock: sock.shutdown(socket.SHUT_WR)):
        server_side, client_side = socket.socketpair()
        server_side.settimeout(30.0)  # as gunicorn's request threads have it: the check must not wait on it
        gone = client_gone_check({"gunicorn.socket": server_side})
        started = time.monotonic()
        assert gone() is False
        assert time.monotonic() - started < 1.0
        client_side.sendall(b"GET /healthz HTTP/1.1\r\n\r\n")  # its next request, pipelined
        assert gone() is False
        assert server_side.recv(1024)  # read, as the worker reads it; nothing is left
        leave(client_side)
        assert gone() is True
        server_side.close()
        client_side.close()


def test_a_socket_closed_under_the_check_reads_as_gone():
    server_side, client_side = socket.socketpair()
    gone = client_gone_check({"gunicorn.socket": server_side})
    server_side.close()
    assert gone() is True
    client_side.close()


def test_without_a_plain_socket_there_is_nothing_to_check():
    assert client_gone_check({}) is None
    assert client_gone_check({"gunicorn.socket": object()}) is None
