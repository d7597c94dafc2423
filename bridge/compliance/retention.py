"""Retention (`compliance.retention_days`): what is older is purged by a background task,
daily by default (`compliance.retention_interval_seconds`).

Purged: message maps, queued-send history (sends that failed or wait for a relink) and held
content no active legal hold covers any more. Kept: whatever an active hold covers. Each
purge that removed anything is audited with its counts, never with content.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import suppress

import attrs

from ..audit import AuditEvent, AuditLog
from ..db import Storage
from ..db.retention import RetentionStore
from .archive import purge_unheld

log = logging.getLogger("relayforge.retention")
DAY_MS = 24 * 3600 * 1000


@attrs.frozen
class Purged:
    messages: int
    outbound: int
    held: int

    @property
    def total(self) -> int:
        return self.messages + self.outbound + self.held


class Retention:
    def __init__(self, storage: Storage, audit: AuditLog, days: int,
                 interval_seconds: float) -> None:
        self.storage = storage
        self.audit = audit
        self.days = days
        self.interval = interval_seconds
        self._store = RetentionStore(storage.db)
        self._task: asyncio.Task[None] | None = None

    async def purge(self, now_ms: int | None = None) -> Purged:
        """One purge of everything older than the retention period."""
        before = (now_ms if now_ms is not None else int(time.time() * 1000)) - (
            self.days * DAY_MS)
        purged = Purged(await self._store.purge_messages(before),
                        await self._store.purge_outbound(before),
                        await purge_unheld(self.storage, before))
        if purged.total:
            await self.audit.append(AuditEvent.RETENTION_PURGE, details={
                "retention_days": self.days, "message_maps": purged.messages,
                "queued_sends": purged.outbound, "held_messages": purged.held})
            log.info("Retention purged %d message maps, %d queued sends, %d held messages",
                     purged.messages, purged.outbound, purged.held)
        return purged

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="retention")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self.purge()
            except Exception:
                # The next run tries again; nothing was half deleted (each purge is one
                # statement).
                log.warning("Retention purge failed", exc_info=True)
            await asyncio.sleep(self.interval)
