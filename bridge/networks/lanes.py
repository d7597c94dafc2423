"""In-order handling per conversation for connectors whose SDK hands over each inbound event
as a task of its own (slack-sdk's Socket Mode does), so that events of one conversation
reach the bridge in the order the network sent them while conversations still run side by
side."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Hashable


class Lanes:
    """One first-come, first-served lane per key. `lane(key)` must be entered before the
    caller's first suspending await (tasks start in the order they were created, so that is
    the order they queue in). A lane is forgotten when its last user leaves: memory follows
    the events in flight, not the number of conversations ever seen."""

    def __init__(self) -> None:
        self._lanes: dict[Hashable, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def lane(self, key: Hashable) -> AsyncIterator[None]:
        lock, users = self._lanes.get(key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()  # asyncio's lock wakes its waiters in the order they came
        self._lanes[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._lanes[key]
            if users <= 1:
                del self._lanes[key]
            else:
                self._lanes[key] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._lanes)
