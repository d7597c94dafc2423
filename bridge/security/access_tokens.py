"""Short-lived access tokens: kept in memory only, refreshed before they expire.

Refresh tokens live only in the vault. When a connector needs to call its network as a person,
it asks here; an access token close to expiry is refreshed first (one refresh at a time per
persona), a rotated refresh token is sealed again, and every refresh leaves an audit record.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable

import attrs

from ..audit import AuditEvent, AuditLog
from .vault import Vault

REFRESH_TOKEN_FIELD = "refresh_token"


@attrs.frozen
class RefreshedTokens:
    access_token: str = attrs.field(repr=False)
    expires_in: int
    # Set when the provider rotates refresh tokens (OAuth 2.1 recommends it).
    refresh_token: str | None = attrs.field(default=None, repr=False)


RefreshFn = Callable[[str], Awaitable[RefreshedTokens]]


@attrs.define
class _Held:
    token: str = attrs.field(repr=False)
    expires_at: float


class AccessTokens:
    def __init__(self, vault: Vault, audit: AuditLog, margin_seconds: float = 60) -> None:
        self.vault = vault
        self.audit = audit
        self.margin = margin_seconds
        self._held: dict[tuple[str, str], _Held] = {}
        self._locks: defaultdict[tuple[str, str], asyncio.Lock] = defaultdict(asyncio.Lock)
        # Called with the persona after each successful refresh (its `last_refresh`).
        self.on_refreshed: list[Callable[[str], Awaitable[None]]] = []

    async def get(self, *, account: str, profile: str, persona: str,
                  refresh: RefreshFn) -> str:
        key = (profile, persona)
        held = self._held.get(key)
        if held and held.expires_at - self.margin > time.monotonic():
            return held.token
        async with self._locks[key]:
            held = self._held.get(key)  # someone may have refreshed while we waited
            if held and held.expires_at - self.margin > time.monotonic():
                return held.token
            refresh_token = await self.vault.open_text(profile, persona, REFRESH_TOKEN_FIELD)
            fresh = await refresh(refresh_token)
            if fresh.refresh_token and fresh.refresh_token != refresh_token:
                await self.vault.seal(profile, persona, REFRESH_TOKEN_FIELD, fresh.refresh_token)
            self._held[key] = _Held(fresh.access_token, time.monotonic() + fresh.expires_in)
            await self.audit.append(
                AuditEvent.TOKEN_REFRESH, actor="system", account=account, profile=profile,
                persona=persona, details={"expires_in": fresh.expires_in,
                                          "rotated": fresh.refresh_token is not None},
            )
            for hook in self.on_refreshed:
                await hook(persona)
            return fresh.access_token

    def drop(self, profile: str, persona: str) -> None:
        """Forget a persona's access token (paused, revoked, or the network refused it)."""
        self._held.pop((profile, persona), None)
