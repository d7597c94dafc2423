"""Legal holds: created, listed and released by admins (bot, API, dashboard), each action
audited. The archive asks `Holds.active()` which holds a new message falls under."""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from ..audit import AuditEvent, AuditLog
from ..db import Storage
from ..db.held_message import HeldStore
from ..db.hold import Hold, HoldScope, HoldStore
from ..security.permissions import is_user_id

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_NETWORK = re.compile(r"[a-z][a-z0-9_]{0,31}")
# Other processes (workers) may create or release holds: re-read the active ones this often.
_CACHE_SECONDS = 5.0


class HoldError(Exception):
    """Bad input for a hold; the message says what is wrong, for the admin to read."""


def parse_time(value: str | None, what: str, *, end: bool = False) -> int | None:
    """An ISO date (2026-01-31) or date-time, in UTC unless it says otherwise, as ms. A bare
    end date means the end of that day."""
    if value is None or value == "":
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise HoldError(f"{what}: {value!r} is not a date (2026-01-31) or date-time "
                        "(2026-01-31T09:00:00Z)") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    ms = int(parsed.timestamp() * 1000)
    if end and len(value) == 10:
        ms += 24 * 3600 * 1000 - 1
    return ms


def iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


class Holds:
    def __init__(self, storage: Storage, audit: AuditLog) -> None:
        self.storage = storage
        self.audit = audit
        self.store = HoldStore(storage.db)
        self.held = HeldStore(storage.db)
        self._active: list[Hold] | None = None
        self._loaded_at = 0.0
        # Called after a hold is created or released (e.g. to refresh another cache).
        self.on_change: list[Callable[[], Awaitable[None]]] = []
        # Writes a hold's bundle (export.BundleWriter.write), set once the vault and the
        # archive exist; the dashboard's Export button uses it.
        self.exporter: Callable[..., Awaitable[dict[str, Any]]] | None = None

    async def active(self) -> list[Hold]:
        if self._active is None or time.monotonic() - self._loaded_at > _CACHE_SECONDS:
            self._active = await self.store.all(active_only=True)
            self._loaded_at = time.monotonic()
        return self._active

    def _changed(self) -> None:
        self._active = None

    async def create(self, *, name: str, scope: str, target: str, actor: str,
                     network: str | None = None, starts_at: int | None = None,
                     ends_at: int | None = None, reason: str | None = None) -> Hold:
        if not _NAME.fullmatch(name or ""):
            raise HoldError("name: 1-64 letters, digits, '.', '_' or '-', starting with a "
                            "letter or digit")
        try:
            kind = HoldScope(scope)
        except ValueError:
            raise HoldError(f"scope: {scope!r} is not one of "
                            f"{', '.join(s.value for s in HoldScope)}") from None
        target = (target or "").strip()
        if not target or len(target) > 255:
            raise HoldError("target: name the custodian, room or workspace (at most 255 "
                            "characters)")
        if kind in (HoldScope.ROOM, HoldScope.WORKSPACE):
            if not network or not _NETWORK.fullmatch(network):
                raise HoldError(f"network: a {kind.value} hold names its network (e.g. slack, "
                                "discord, telegram, xmpp)")
        elif network:
            raise HoldError(f"network: a {kind.value} hold covers every network; leave it out")
        if kind == HoldScope.USER and not is_user_id(target):
            raise HoldError(f"target: {target!r} is not a Matrix user ID (@name:server)")
        if kind == HoldScope.ACCOUNT and await self.storage.accounts.get(target) is None:
            raise HoldError(f"target: there is no account {target!r}")
        if starts_at is not None and ends_at is not None and ends_at < starts_at:
            raise HoldError("until: the end of the date range is before its start")
        reason = (reason or "").strip() or None
        if reason is not None and len(reason) > 500:
            raise HoldError("reason: at most 500 characters")
        hold = Hold(secrets.token_hex(8), name, reason, kind, network or None, target,
                    starts_at, ends_at, actor)
        if not await self.store.add(hold):
            raise HoldError(f"name: a hold named {name!r} exists already (released holds "
                            "keep their names)")
        self._changed()
        await self.audit.append(AuditEvent.LEGAL_HOLD, actor=actor, details={
            "what": "created", "hold": name, "scope": kind.value, "target": target,
            "network": network, "starts": iso(starts_at), "ends": iso(ends_at),
            "reason": reason})
        for listener in self.on_change:
            await listener()
        return hold

    async def release(self, name: str, actor: str) -> Hold:
        hold = await self.get(name)
        if not await self.store.release(hold.id, actor):
            raise HoldError(f"The hold {name!r} was released already.")
        self._changed()
        count = await self.held.count_of_hold(hold.id)
        await self.audit.append(AuditEvent.LEGAL_HOLD, actor=actor, details={
            "what": "released", "hold": name, "messages": count})
        for listener in self.on_change:
            await listener()
        return await self.get(name)

    async def get(self, name: str) -> Hold:
        hold = await self.store.by_name(name)
        if hold is None:
            raise HoldError(f"There is no hold named {name!r}.")
        return hold

    async def listing(self, actor: str, *, active_only: bool = False
                      ) -> list[tuple[Hold, int]]:
        """Every hold with how many messages it keeps; audited as a view."""
        holds = await self.store.all(active_only=active_only)
        await self.audit.append(AuditEvent.LEGAL_HOLD, actor=actor, details={
            "what": "listed", "holds": len(holds)})
        return [(hold, await self.held.count_of_hold(hold.id)) for hold in holds]


def describe(hold: Hold, count: int | None = None) -> str:
    where = f"{hold.network} {hold.target}" if hold.network else hold.target
    span = ""
    if hold.starts_at or hold.ends_at:
        span = f", {iso(hold.starts_at) or '…'} to {iso(hold.ends_at) or '…'}"
    state = (f"released {iso(hold.released_at)} by {hold.released_by}" if hold.released_at
             else "active")
    kept = f", {count} message(s) kept" if count is not None else ""
    reason = f" — {hold.reason}" if hold.reason else ""
    return f"{hold.name}: {hold.scope.value} {where}{span} ({state}{kept}){reason}"


async def account_under_hold(storage: Storage, account_id: str) -> bool:
    """Whether an active hold names the account or one of its Matrix users as custodian.
    (`forget-me` is refused then.)"""
    users = await storage.accounts.matrix_users(account_id)
    store = HoldStore(storage.db)
    return (await store.active_for_targets([HoldScope.ACCOUNT], [account_id])
            or await store.active_for_targets([HoldScope.USER], users))


async def matrix_user_under_hold(storage: Storage, mxid: str) -> bool:
    store = HoldStore(storage.db)
    if await store.active_for_targets([HoldScope.USER], [mxid]):
        return True
    account = await storage.accounts.by_mxid(mxid)
    return account is not None and await store.active_for_targets([HoldScope.ACCOUNT],
                                                                  [account.id])
