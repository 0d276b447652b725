"""API keys: Bearer tokens against every configured key; health endpoints stay open."""

from __future__ import annotations

import pytest

from sie.server.auth import ApiKeys
from sie.server.errors import UnauthorizedError


def test_without_keys_everything_is_open():
    ApiKeys([]).check("/v1/score/m", None)


@pytest.mark.parametrize("authorization", ["Bearer k1", "bearer k2", "Bearer  k2 "])
def test_any_configured_key_passes(authorization):
    ApiKeys(["k1", "k2"]).check("/v1/score/m", authorization)


@pytest.mark.parametrize("authorization", [None, "", "Bearer", "Bearer k3", "Basic k1", "k1", "Bearer k1k2"])
def test_anything_else_is_unauthorized(authorization):
    with pytest.raises(UnauthorizedError) as raised:
        ApiKeys(["k1", "k2"]).check("/metrics", authorization)
    assert "k1" not in str(raised.value) and "k2" not in str(raised.value)


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_health_paths_stay_open(path):
    ApiKeys(["k1"]).check(path, None)
