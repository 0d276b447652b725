"""The server's settings: one table gives each its default, its ``SIE_*`` variable and its ``sie serve`` flag.

Layers, later wins: the defaults below -> the environment -> an explicit override (``create_app(config=...)``
in tests). ``sie serve`` writes the flags it was given into the environment, so the gunicorn arbiter and the
workers it forks read one source.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from sie.dtypes import DTYPES
from sie.kernels.dispatch import BACKENDS

# The most bytes of headers a request may send (431 past them); chunked trailers get as many.
MAX_HEADER_BYTES = 64 * 1024
# The longest wait a setting may ask for: about 31 years; Python's timed waits overflow the platform's clock a
# little further on (an infinite timeout would fail every request).
MAX_SECONDS = 1e9
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
_DEVICE = re.compile(r"auto|(cpu|cuda)(:\d+)?")


def max_chunk_framing_bytes(max_body_bytes: int) -> int:
    """The most bytes a chunked body may spend on framing (chunk-size lines and trailers) besides its data: an
    eighth of ``max_body_bytes`` (chunks of 64 bytes or more fit) plus ``MAX_HEADER_BYTES`` for the trailers."""
    return max_body_bytes // 8 + MAX_HEADER_BYTES


def max_request_bytes(max_body_bytes: int) -> int:
    """The most bytes one request may take on the wire before the worker refuses it (431 or 413): its headers and
    a body of ``max_body_bytes`` with a chunked body's framing."""
    return MAX_HEADER_BYTES + len(b"\r\n\r\n") + max_body_bytes + max_chunk_framing_bytes(max_body_bytes)


def _csv(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _bool(value: str) -> bool | None:
    """A boolean, or None (the setting's default) for a blank value."""
    lowered = value.strip().lower()
    if not lowered:
        return None
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected a boolean (1/0, true/false), got {value!r}")


def _recipes(value: str) -> tuple[str, ...]:
    """``MODEL=RECIPE`` entries, comma-separated."""
    entries = _csv(value)
    for entry in entries:
        model, _, recipe = entry.partition("=")
        if not model.strip() or not recipe.strip():
            raise ValueError(f"expected MODEL=RECIPE, got {entry!r}")
    return entries


def _optional_int(value: str) -> int | None:
    return int(value) if value.strip() else None


def _dtype(value: str) -> str | None:
    value = value.strip().removeprefix("torch.")  # as the library reads it (sie.dtypes)
    if value and value not in DTYPES:
        raise ValueError(f"expected one of {', '.join(DTYPES)}, got {value!r}")
    return value or None


@dataclass(frozen=True)
class Setting:
    """How one setting is read from text (environment or command line) and documented."""

    parse: Callable[[str], Any]
    help: str
    flag: str


def env_name(name: str) -> str:
    """The environment variable of setting ``name``: ``SIE_<NAME>``."""
    return f"SIE_{name.upper()}"


def _default_models() -> tuple[str, ...]:
    from sie import DEFAULT_MODEL

    return (DEFAULT_MODEL,)


@dataclass(frozen=True)
class ServerConfig:
    """Every setting of ``sie serve``; ``SETTINGS`` below documents each one."""

    host: str = "127.0.0.1"
    port: int = 8080
    models: tuple[str, ...] = field(default_factory=_default_models)
    workers: int = 1
    threads: int = 128
    api_keys: tuple[str, ...] = field(default=(), repr=False)  # never printed
    recipes: tuple[str, ...] = ()
    device: str = "auto"
    dtype: str | None = None
    backend: str = "auto"
    max_batch_tokens: int | None = None
    max_batch_wait_ms: float = 2.0
    max_queue: int = 64
    max_items: int = 1000
    max_body_bytes: int = 16 * 1024 * 1024
    max_response_bytes: int = 128 * 1024 * 1024
    max_buffered_bytes: int = 256 * 1024 * 1024
    request_timeout_s: float = 60.0
    read_timeout_s: float = 10.0
    write_timeout_s: float = 60.0
    max_connections: int = 4096
    load_on_demand: bool = True
    max_on_demand_models: int = 0
    graceful_timeout_s: int = 30
    log_level: str = "info"
    access_log: bool = False
    malloc_trim_interval_s: float = 10.0
    malloc_mmap_threshold: int = 0

    def __post_init__(self) -> None:
        # A model named twice is one model: loading it twice would hold it twice, and one batcher would never close.
        object.__setattr__(self, "models", tuple(dict.fromkeys(self.models)))
        # Spelled as the library reads SIE_BACKEND: any case, blank for the default.
        for name, choices in (("backend", BACKENDS), ("log_level", LOG_LEVELS)):
            value = str(getattr(self, name)).strip().lower() or self.__dataclass_fields__[name].default
            if value not in choices:
                raise ValueError(f"{env_name(name)} ({SETTINGS[name].flag}) must be one of {', '.join(choices)}, "
                                 f"not {getattr(self, name)!r}")
            object.__setattr__(self, name, value)
        object.__setattr__(self, "device", self.device.strip().lower() or "auto")
        # Blank is the default here too: gunicorn binds an empty host to every interface (0.0.0.0), which would
        # open the server to the network when SIE_HOST is set but empty.
        object.__setattr__(self, "host", self.host.strip() or self.__dataclass_fields__["host"].default)
        if not _DEVICE.fullmatch(self.device):
            raise ValueError(f"{env_name('device')} (--device) must be auto, cpu, cuda or cuda:N, not {self.device!r}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"{env_name('port')} (--port) must be a port number from 0 to 65535, not {self.port}")
        for name in ("request_timeout_s", "read_timeout_s", "write_timeout_s"):
            if not 0 < getattr(self, name) <= MAX_SECONDS:
                raise ValueError(f"{env_name(name)} ({SETTINGS[name].flag}) must be a positive number of seconds, "
                                 f"at most {MAX_SECONDS:g}, not {getattr(self, name)}")
        for name, most in (("max_batch_wait_ms", MAX_SECONDS * 1000), ("malloc_trim_interval_s", MAX_SECONDS),
                           ("graceful_timeout_s", MAX_SECONDS)):
            if not 0 <= getattr(self, name) <= most:
                raise ValueError(f"{env_name(name)} ({SETTINGS[name].flag}) must be from 0 to {most:g}, not "
                                 f"{getattr(self, name)}")
        if self.max_on_demand_models < 0:
            raise ValueError(f"{env_name('max_on_demand_models')} (--max-on-demand-models) must be 0 (no limit) or "
                             f"more, not {self.max_on_demand_models}")
        # mallopt takes a C int: a negative threshold was ignored without a word, a larger one wrapped around.
        if not 0 <= self.malloc_mmap_threshold <= 2**31 - 1:
            raise ValueError(f"{env_name('malloc_mmap_threshold')} (--malloc-mmap-threshold) must be from 0 (glibc's "
                             f"default) to {2**31 - 1} bytes, not {self.malloc_mmap_threshold}")
        for name in ("workers", "threads", "max_queue", "max_items", "max_body_bytes", "max_response_bytes",
                     "max_connections", "max_batch_tokens"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{env_name(name)} ({SETTINGS[name].flag}) must be at least 1, not "
                                 f"{getattr(self, name)}")
        # Then a request alone within its own limits (413, 431) is never refused for the worker's buffers.
        least = max_request_bytes(self.max_body_bytes)
        if self.max_buffered_bytes < least:
            raise ValueError(f"--max-buffered-bytes ({self.max_buffered_bytes}) is below {least}, what one request "
                             f"may take on the wire with a body of --max-body-bytes ({self.max_body_bytes}), its "
                             "headers and chunked framing: such a request could never be read")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServerConfig:
        """Defaults overlaid with the ``SIE_*`` variables that are set (raises ValueError naming a bad one); a value
        a parser reads as None (a blank boolean, dtype or budget) leaves the default."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name, setting in SETTINGS.items():
            variable = env_name(name)
            if variable in environ:
                try:
                    parsed = setting.parse(environ[variable])
                except ValueError as error:
                    raise ValueError(f"{variable} ({setting.flag}): {error}") from None
                if parsed is not None:
                    values[name] = parsed
        return cls(**values)

    def override(self, overrides: Mapping[str, Any] | None) -> ServerConfig:
        """A copy with ``overrides`` applied; unknown names raise."""
        if not overrides:
            return self
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown server setting(s): {', '.join(unknown)}")
        values = dict(overrides)
        for name in ("models", "api_keys", "recipes"):
            if isinstance(values.get(name), str):
                values[name] = _csv(values[name])
            elif name in values:
                values[name] = tuple(values[name])
        return replace(self, **values)

    def recipe_for(self, model: str) -> str | None:
        """The recipe ``recipes`` names for ``model`` (a decoder reranker's prompt), or None."""
        for entry in self.recipes:
            name, _, recipe = entry.partition("=")
            if name.strip() == model:
                return recipe.strip()
        return None


SETTINGS: dict[str, Setting] = {
    "host": Setting(str, "address to listen on (0.0.0.0 for every interface)", "--host"),
    "port": Setting(int, "port to listen on", "--port"),
    "models": Setting(_csv, "models loaded at start-up (comma-separated ids or paths)", "--model"),
    "workers": Setting(int, "worker processes: one per device (one on CPU); worker i uses cuda:i", "--workers"),
    "threads": Setting(int, "request threads per worker (more than max-queue, so that the queue bound, not the "
                            "thread pool, is what pushes back)", "--threads"),
    "api_keys": Setting(_csv, "accepted API keys (comma-separated); none: no authentication", "--api-key"),
    "recipes": Setting(_recipes, "MODEL=RECIPE: the prompt recipe of a decoder reranker (qwen3-reranker, "
                                 "mxbai-rerank-v2 or a recipe file), when neither its folder nor its Hub id says",
                       "--recipe"),
    "device": Setting(str, "device: auto, cpu, cuda or cuda:N", "--device"),
    "dtype": Setting(_dtype, "weights/activation dtype (float32, float16, bfloat16; int8: int8 linear layers, CPU "
                             "only); default: the engine's", "--dtype"),
    "backend": Setting(str, "attention backend: auto, flash, triton, cpu or torch", "--backend"),
    "max_batch_tokens": Setting(_optional_int, "token budget of one batch; default: the engine's",
                                "--max-batch-tokens"),
    "max_batch_wait_ms": Setting(float, "how long a batch waits for requests still being tokenized",
                                 "--max-batch-wait-ms"),
    "max_queue": Setting(int, "requests admitted per model and not yet running; past it 503 QUEUE_FULL",
                         "--max-queue"),
    "max_items": Setting(int, "most items in one request; past it 413", "--max-items"),
    "max_body_bytes": Setting(int, "largest request body in bytes; past it 413", "--max-body-bytes"),
    "max_response_bytes": Setting(int, "most bytes of vectors one encode request may ask for, counted as float32 "
                                       "(a multivector output is tokens x width); past it 413 RESPONSE_TOO_LARGE "
                                       "before the request runs", "--max-response-bytes"),
    "max_buffered_bytes": Setting(int, "bytes of requests still arriving that a worker holds, over all its "
                                       "connections; the request whose bytes would pass it gets 503 "
                                       "RESOURCE_EXHAUSTED and its connection is closed", "--max-buffered-bytes"),
    "request_timeout_s": Setting(float, "a request still queued after this many seconds gets 504",
                                 "--request-timeout"),
    "read_timeout_s": Setting(float, "seconds a client has to send a whole request (headers and body), from "
                                     "connecting or, on a kept-alive connection, from the request's first byte; past "
                                     "it 408 and the connection is closed", "--read-timeout"),
    "write_timeout_s": Setting(float, "seconds a request thread waits on a client that does not read its answer "
                                      "before it closes the connection", "--write-timeout"),
    "max_connections": Setting(int, "open client connections per worker (idle keep-alive ones included; they "
                                    "hold no request thread); past it new ones wait in the listen backlog",
                               "--max-connections"),
    "load_on_demand": Setting(_bool, "load a locally available model at its first request (503 MODEL_LOADING "
                                     "meanwhile) instead of answering 404", "--load-on-demand"),
    "max_on_demand_models": Setting(int, "models loaded on demand that a worker holds at once; loading one more "
                                         "first unloads the least recently used, once its queued requests have "
                                         "run (0: no limit; configured models are never unloaded)",
                                    "--max-on-demand-models"),
    "graceful_timeout_s": Setting(int, "seconds in-flight requests get to finish on shutdown",
                                  "--graceful-timeout"),
    "log_level": Setting(str, "log level: debug, info, warning, error, critical", "--log-level"),
    "access_log": Setting(_bool, "log every request (method, path, status; never headers)", "--access-log"),
    "malloc_trim_interval_s": Setting(float, "under load, give freed heap back to the OS after a batch at most once "
                                             "per this many seconds; an idle model's worker does it at once (glibc "
                                             "malloc_trim; 0: never)", "--malloc-trim-interval"),
    "malloc_mmap_threshold": Setting(int, "bytes from which glibc allocates with mmap, freed straight to the OS "
                                          "(0: glibc's adaptive default, faster)", "--malloc-mmap-threshold"),
}
