"""Periodic notices of the audit head in an admin Matrix room: a copy outside the database
that nobody with only database access can rewrite."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from ..db.audit_log import AuditLogStore

log = logging.getLogger("relayforge.audit")


class HeadNotices:
    def __init__(self, store: AuditLogStore, post: Callable[[str], Awaitable[None]],
                 interval_seconds: float) -> None:
        self.store = store
        self.post = post
        self.interval = interval_seconds
        self._last_seq = 0
        self._task: asyncio.Task | None = None

    async def post_if_new(self) -> None:
        head = await self.store.head()
        if head is None or head.seq == self._last_seq:
            return
        await self.post(f"Audit log head: record {head.seq} at {head.ts}, MAC {head.mac}")
        self._last_seq = head.seq

    async def _loop(self) -> None:
        while True:
            try:
                await self.post_if_new()
            except Exception:
                log.exception("Could not post the audit head notice")
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="audit-head-notices")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
