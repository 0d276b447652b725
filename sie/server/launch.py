"""``sie serve``: its flags (one per setting, each with its ``SIE_*`` variable) and the gunicorn arbiter it runs.

The flags given are written into the environment, so the workers gunicorn forks read the same settings
as the arbiter; the arbiter runs in this process and returns its exit status.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

from gunicorn.app.base import BaseApplication

from sie.server.config import SETTINGS, ServerConfig, env_name

_REPEATABLE = ("models", "api_keys", "recipes")
_SWITCHES = ("load_on_demand", "access_log")


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds one flag per server setting; a flag left out falls back to its ``SIE_*`` variable, then the default."""
    defaults = ServerConfig.__dataclass_fields__
    for name, setting in SETTINGS.items():
        default = defaults[name].default
        if name == "models":
            default = ",".join(defaults[name].default_factory())
        shown = f"; default {default}" if isinstance(default, (str, int, float)) and name != "api_keys" else ""
        kwargs: dict[str, Any] = {"dest": name, "default": None, "metavar": setting.flag[2:].upper().replace("-", "_"),
                                  "help": f"{setting.help} (env {env_name(name)}{shown})"}
        if name in _REPEATABLE:
            kwargs["action"] = "append"
        elif name in _SWITCHES:
            kwargs.update(nargs="?", const="1", metavar="BOOL")
        parser.add_argument(setting.flag, **kwargs)


class _Arbiter(BaseApplication):
    """gunicorn with sie's settings and application, configured in code rather than from argv."""

    def __init__(self, config: ServerConfig) -> None:
        self._config = config
        super().__init__()

    def load_config(self) -> None:
        from sie.server.gunicorn_conf import settings

        for key, value in settings(self._config).items():
            if key in self.cfg.settings:  # older gunicorns lack some (control_socket_disable)
                self.cfg.set(key, value)

    def load(self) -> Any:
        # Runs in each worker after fork (preload_app is off).
        from sie.server.app import create_app

        return create_app()


def run_serve(args: argparse.Namespace) -> int:
    """Starts the server with the flags in ``args`` (from ``add_serve_arguments``); returns the exit status."""
    for name in SETTINGS:
        value = getattr(args, name, None)
        if value is not None:
            os.environ[env_name(name)] = ",".join(value) if name in _REPEATABLE else str(value)
    try:
        config = ServerConfig.from_env()
    except ValueError as error:
        print(f"sie serve: {error}", file=sys.stderr)
        return 2
    logging.getLogger("sie").setLevel(config.log_level.upper())
    try:
        _Arbiter(config).run()
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else 1
    return 0
