"""Optional API keys: ``Authorization: Bearer <key>`` compared in constant time against every configured key.

Keys are never logged and never echoed in an error message.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from sie.server.errors import UnauthorizedError

OPEN_PATHS = frozenset({"/healthz", "/readyz"})


class ApiKeys:
    """The accepted keys; with none configured every request is allowed."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._keys = tuple(key.encode() for key in keys)

    def check(self, path: str, authorization: str | None) -> None:
        """Raises UnauthorizedError unless ``path`` is open or ``authorization`` carries a configured key."""
        if not self._keys or path in OPEN_PATHS:
            return
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise UnauthorizedError("missing API key: send Authorization: Bearer <key>")
        presented = token.strip().encode()
        # Compare against every key, without stopping at a match, so timing says nothing about which matched.
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(presented, key)
        if not matched:
            raise UnauthorizedError("invalid API key")
