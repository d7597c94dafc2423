"""Sends to a remote room whose remote ids are not in the message map yet.

A remote person can answer a message the bridge just sent (a read marker, a reaction, a reply)
before the bridge has recorded which Matrix event that remote id belongs to. A lookup that misses
while sends to the same room are in flight waits for them instead of dropping the answer.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

RoomKey = tuple[str, str]  # (network, remote room id)


class SendsInFlight:
    def __init__(self, patience: float = 15.0) -> None:
        self.patience = patience
        self._counts: Counter[RoomKey] = Counter()
        self._changed = asyncio.Condition()

    @asynccontextmanager
    async def sending(self, room: RoomKey) -> AsyncIterator[None]:
        self._counts[room] += 1
        try:
            yield
        finally:
            async with self._changed:
                self._counts[room] -= 1
                if self._counts[room] <= 0:
                    del self._counts[room]
                self._changed.notify_all()

    def busy(self, room: RoomKey) -> bool:
        return self._counts[room] > 0

    async def settled(self, room: RoomKey) -> None:
        """Wait (at most `patience` seconds) until no send to the room is in flight."""
        async with self._changed:
            try:
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: self._counts[room] <= 0), self.patience)
            except TimeoutError:
                pass  # a send stuck on the network: answer with what is known
