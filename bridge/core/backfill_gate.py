"""The per-portal gate: while a portal's history is being brought in, live events for it
wait, and land after the history in the order they came. History and live events never
interleave; the message map drops anything both paths bring."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextvars import ContextVar

from ..networks.base import RemoteEvent

log = logging.getLogger("relayforge.backfill")

Deliver = Callable[[str, RemoteEvent], Awaitable[None]]
Key = tuple[str, str]  # (network, remote room id)


class PortalGate:
    def __init__(self, limit: int = 10_000) -> None:
        self._waiting: dict[Key, list[RemoteEvent]] = {}
        # Live events kept per portal at most while its history comes in; beyond that the
        # oldest queued are dropped (the next catch-up brings them from the history).
        self.limit = limit

    def held(self, network: str, remote_room: str) -> bool:
        return (network, remote_room) in self._waiting

    def hold(self, network: str, remote_room: str) -> bool:
        """Start holding live events of a portal; False if it is held already."""
        key = (network, remote_room)
        if key in self._waiting:
            return False
        self._waiting[key] = []
        return True

    async def live(self, network: str, event: RemoteEvent, deliver: Deliver) -> None:
        """A live event from a connector: delivered now, or queued while its portal's
        history comes in (the connector is not held up meanwhile)."""
        queue = self._waiting.get((network, event.room.remote_id))
        if queue is None:
            await deliver(network, event)
            return
        if len(queue) >= self.limit:
            log.warning("Backfill of %s %s: live queue full, dropping its oldest event",
                        network, event.room.remote_id)
            queue.pop(0)
        queue.append(event)

    async def release(self, network: str, remote_room: str, deliver: Deliver) -> int:
        """Deliver what waited, in order (including what arrives meanwhile), then let live
        events through again. Returns how many waited."""
        key = (network, remote_room)
        queue = self._waiting.get(key)
        count = 0
        while queue:
            event = queue.pop(0)
            count += 1
            try:
                await deliver(network, event)
            except Exception:
                log.exception("A live %s event held during backfill of %s failed",
                              type(event).__name__, remote_room)
        # No await between the last empty check and this: nothing can slip in between.
        self._waiting.pop(key, None)
        return count


#: True while the history path sends (for code the live path shares with it, like the legal
#: hold capture, which records such messages as coming from the history).
FROM_HISTORY: ContextVar[bool] = ContextVar("relayforge_from_history", default=False)
