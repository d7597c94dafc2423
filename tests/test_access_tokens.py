"""Access tokens: in memory only, refreshed before expiry, every refresh audited."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bridge.db import open_database
from bridge.security.access_tokens import AccessTokens, RefreshedTokens
from bridge.security.setup import open_security

from .support.configs import admin_config


class TokenEndpoint:
    """Stands in for a network's OAuth token endpoint (the remote side, not our code)."""

    def __init__(self, lifetime: int, rotate: bool = False) -> None:
        self.lifetime = lifetime
        self.rotate = rotate
        self.calls: list[str] = []

    async def __call__(self, refresh_token: str) -> RefreshedTokens:
        self.calls.append(refresh_token)
        await asyncio.sleep(0.01)
        n = len(self.calls)
        return RefreshedTokens(f"access-{n}-SECRETVALUE", self.lifetime,
                               f"refresh-{n}-ROTATED" if self.rotate else None)


@pytest.fixture
async def security(tmp_path, db_uri):
    config = admin_config(tmp_path, db_uri)
    storage = await open_database(db_uri)
    security = await open_security(config, storage)
    await security.vault.seal("Jobb", "slack:U1", "refresh_token", "refresh-0-ORIGINAL")
    yield security
    await security.close()
    await storage.close()


def ask(tokens: AccessTokens, endpoint: TokenEndpoint):
    return tokens.get(account="@alice:localhost", profile="Jobb", persona="slack:U1",
                      refresh=endpoint)


async def test_refreshed_once_then_served_from_memory(security):
    tokens = AccessTokens(security.vault, security.audit, margin_seconds=60)
    endpoint = TokenEndpoint(lifetime=3600)
    results = await asyncio.gather(*(ask(tokens, endpoint) for _ in range(10)))
    assert set(results) == {"access-1-SECRETVALUE"}
    assert endpoint.calls == ["refresh-0-ORIGINAL"]
    records = await security.audit.latest(10)
    assert [r.event_type for r in records] == ["token_refresh"]
    assert records[0].persona == "slack:U1"
    assert "SECRETVALUE" not in records[0].details


async def test_token_near_expiry_is_refreshed_and_rotation_is_sealed(security, db_uri):
    tokens = AccessTokens(security.vault, security.audit, margin_seconds=60)
    endpoint = TokenEndpoint(lifetime=30, rotate=True)  # inside the margin: always refresh
    assert await ask(tokens, endpoint) == "access-1-SECRETVALUE"
    assert await ask(tokens, endpoint) == "access-2-SECRETVALUE"
    assert endpoint.calls == ["refresh-0-ORIGINAL", "refresh-1-ROTATED"]
    assert await security.vault.open_text("Jobb", "slack:U1", "refresh_token") == (
        "refresh-2-ROTATED")
    assert len(await security.audit.latest(10)) == 2
    if db_uri.startswith("sqlite:"):
        stored = Path(db_uri.removeprefix("sqlite:")).read_bytes()
        assert b"SECRETVALUE" not in stored and b"ROTATED" not in stored


async def test_dropped_token_is_fetched_again(security):
    tokens = AccessTokens(security.vault, security.audit)
    endpoint = TokenEndpoint(lifetime=3600)
    await ask(tokens, endpoint)
    tokens.drop("Jobb", "slack:U1")
    assert await ask(tokens, endpoint) == "access-2-SECRETVALUE"
