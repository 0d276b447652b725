"""gunicorn settings for the score server, derived from the ``SIE_*`` environment (ServerConfig).

``sie serve`` applies ``settings()``; running gunicorn by hand works too:
``gunicorn -c python:sie.server.gunicorn_conf`` (the module-level names below are gunicorn's settings).

Threaded workers (``sie.server.worker``: gthread that buffers each request before a thread takes it): one
process per device (one on CPU), ``threads`` request threads each. No preload of the application: each worker
builds it after fork and loads its models there; the arbiter only imports the code (``sie.server.prefork``),
so that a replacement worker starts in the time its models take to load.
"""

from __future__ import annotations

import os
from typing import Any

from sie.server.config import MAX_HEADER_BYTES, ServerConfig
from sie.server.memory import configure_allocator
from sie.server.model_registry import WORKER_SLOT_ENV
from sie.server.prefork import preimport, raise_open_files_limit

# The access log line: client, request line, status, size, duration. Never headers (API keys travel there).
ACCESS_LOG_FORMAT = '%(h)s "%(r)s" %(s)s %(B)s %(M)sms'


def _bind(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def pre_fork(server: Any, worker: Any) -> None:
    """Gives the new worker the lowest slot no live worker holds (a replaced worker inherits its GPU)."""
    taken = {getattr(other, "sie_slot", None) for other in server.WORKERS.values()}
    worker.sie_slot = next(slot for slot in range(len(taken) + 1) if slot not in taken)


def when_ready(server: Any) -> None:
    """Before the first fork: raise the open-files limit for the client connections, import the heavy code."""
    raise_open_files_limit(server.cfg.worker_connections * server.cfg.workers)
    preimport()


def post_fork(server: Any, worker: Any) -> None:
    os.environ[WORKER_SLOT_ENV] = str(worker.sie_slot)
    configure_allocator(ServerConfig.from_env().malloc_mmap_threshold)


def worker_exit(server: Any, worker: Any) -> None:
    """After the last in-flight request is answered: stop the batcher threads."""
    app = getattr(worker, "wsgi", None)
    if app is not None and "sie" in getattr(app, "extensions", {}):
        app.extensions["sie"].registry.close()


def settings(config: ServerConfig) -> dict[str, Any]:
    """gunicorn's settings for ``config``."""
    return {
        "bind": [_bind(config.host, config.port)],
        "worker_class": "sie.server.worker.BufferingThreadWorker",
        "workers": config.workers,
        "threads": config.threads,
        "worker_connections": config.max_connections,
        "preload_app": False,
        # gthread workers heartbeat from their main thread, so a long batch never trips this.
        "timeout": 120,
        "graceful_timeout": config.graceful_timeout_s,
        "keepalive": 5,
        # The worker's loop bounds a request's head (request line and headers) to MAX_HEADER_BYTES and answers 431
        # in the server's format past it; gunicorn's own limits (a 4,094-byte line, 8,190-byte fields, 100 of
        # them) would refuse smaller heads first, in HTML. 0 lifts the line's; the others take their largest.
        "limit_request_line": 0,
        "limit_request_field_size": MAX_HEADER_BYTES,
        "limit_request_fields": 32768,
        "loglevel": config.log_level,
        "errorlog": "-",
        "accesslog": "-" if config.access_log else None,
        "access_log_format": ACCESS_LOG_FORMAT,
        "when_ready": when_ready,
        "pre_fork": pre_fork,
        "post_fork": post_fork,
        "worker_exit": worker_exit,
        # Several servers may run on one machine (tests, one per device group): no shared control socket.
        "control_socket_disable": True,
    }


wsgi_app = "sie.server.app:create_app()"
globals().update(settings(ServerConfig.from_env()))
