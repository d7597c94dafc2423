"""The per-portal gate: while a portal's history is being brought in, live events for it
wait, and land after the history in the order they came. History and live events never
interleave; the message map drops anything both paths bring.

A whole network can be held too, while a rule joins a room whose network id is not known
yet (a Slack "#general" is "C123" only once joined): a network starts reporting a room's
events as soon as it is joined, before its portal exists and its own hold can begin. What
the network says meanwhile waits, and a room held then takes its events along."""

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
        # Per network: how many joins hold it, and what it said meanwhile (in order).
        self._joins: dict[str, int] = {}
        self._network_waiting: dict[str, list[RemoteEvent]] = {}
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
        queue = self._waiting[key] = []
        network_queue = self._network_waiting.get(network)
        if network_queue:
            # Said while its network was held: they came first, so they wait first.
            queue += [e for e in network_queue if e.room.remote_id == remote_room]
            network_queue[:] = [e for e in network_queue if e.room.remote_id != remote_room]
        return True

    def hold_network(self, network: str) -> None:
        """Hold every live event of `network` not held by its portal already, until
        `release_network` (one call each)."""
        self._joins[network] = self._joins.get(network, 0) + 1
        self._network_waiting.setdefault(network, [])

    async def release_network(self, network: str, deliver: Deliver) -> int:
        """One network hold ends; the last one lets what waited through, in order."""
        count = self._joins.get(network, 0) - 1
        if count > 0:
            self._joins[network] = count
            return 0
        queue = self._network_waiting.get(network, [])
        delivered = 0
        while queue:
            event = queue.pop(0)
            waiting = self._waiting.get((network, event.room.remote_id))
            if waiting is not None:
                waiting.append(event)  # its portal was held meanwhile: after its history
                continue
            delivered += 1
            await self._deliver(network, event, deliver)
        # No await between the last empty check and this: nothing can slip in between.
        self._joins.pop(network, None)
        self._network_waiting.pop(network, None)
        return delivered

    async def live(self, network: str, event: RemoteEvent, deliver: Deliver) -> None:
        """A live event from a connector: delivered now, or queued while its portal's
        history comes in (the connector is not held up meanwhile)."""
        queue = self._waiting.get((network, event.room.remote_id))
        if queue is None:
            queue = self._network_waiting.get(network)
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
            await self._deliver(network, event, deliver)
        # No await between the last empty check and this: nothing can slip in between.
        self._waiting.pop(key, None)
        return count

    def abandon(self, network: str, remote_room: str) -> int:
        """The bridge stops in the middle of the portal's history: what waited is dropped
        (the next start reads it from the history again, after what is still missing),
        and the portal stays held so nothing overtakes that history before the stop."""
        queue = self._waiting.get((network, remote_room))
        if queue is None:
            return 0
        dropped = len(queue)
        queue.clear()
        return dropped

    async def _deliver(self, network: str, event: RemoteEvent, deliver: Deliver) -> None:
        try:
            await deliver(network, event)
        except Exception:
            log.exception("A live %s event held during backfill of %s failed",
                          type(event).__name__, event.room.remote_id)


#: True while the history path sends (for code the live path shares with it, like the legal
#: hold capture, which records such messages as coming from the history).
FROM_HISTORY: ContextVar[bool] = ContextVar("relayforge_from_history", default=False)
