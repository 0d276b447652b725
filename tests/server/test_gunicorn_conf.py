"""gunicorn settings: the buffering threaded worker without preload, the connection bound, the bind address,
and one device slot per worker."""

from __future__ import annotations

from types import SimpleNamespace

from sie.server.config import ServerConfig
from sie.server.gunicorn_conf import pre_fork, settings


def test_settings_follow_the_config():
    config = ServerConfig.from_env({"SIE_HOST": "::1", "SIE_PORT": "9000", "SIE_WORKERS": "3", "SIE_THREADS": "8",
                                    "SIE_MAX_CONNECTIONS": "5000"})
    gunicorn = settings(config)
    assert gunicorn["bind"] == ["[::1]:9000"] and gunicorn["workers"] == 3 and gunicorn["threads"] == 8
    assert gunicorn["worker_class"] == "sie.server.worker.BufferingThreadWorker" and gunicorn["preload_app"] is False
    assert gunicorn["worker_connections"] == 5000
    assert gunicorn["accesslog"] is None


def test_each_new_worker_takes_the_lowest_free_slot():
    arbiter = SimpleNamespace(WORKERS={})
    for pid in (101, 102, 103):
        worker = SimpleNamespace()
        pre_fork(arbiter, worker)
        arbiter.WORKERS[pid] = worker
    assert [worker.sie_slot for worker in arbiter.WORKERS.values()] == [0, 1, 2]
    del arbiter.WORKERS[102]  # a worker died: its replacement takes over its device
    replacement = SimpleNamespace()
    pre_fork(arbiter, replacement)
    assert replacement.sie_slot == 1


def test_a_blank_host_binds_the_default_loopback_address_not_every_interface():
    # gunicorn reads an empty host as 0.0.0.0: a SIE_HOST= left empty must not open the server to the network.
    for host in ("", " "):
        assert settings(ServerConfig.from_env({"SIE_HOST": host}))["bind"] == ["127.0.0.1:8080"]
