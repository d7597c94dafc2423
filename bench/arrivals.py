"""When each tagged message showed up somewhere: the one clock every measurement reads."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable


class Arrivals:
    """First time each tag (a message body) was seen. Everything runs on one event loop, so
    recording needs no lock; waiters wake on every new arrival and re-check."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}
        self._changed = asyncio.Event()

    def record(self, tag: str, at: float | None = None) -> None:
        if tag not in self.times:
            self.times[tag] = time.perf_counter() if at is None else at
            self._changed.set()

    async def wait(self, tags: Iterable[str], within: float) -> dict[str, float]:
        """Arrival times of all `tags`; fails naming how many never came."""
        wanted = list(tags)
        deadline = time.monotonic() + within
        while True:
            # Cleared before checking: an arrival after the check sets it again, so no wakeup
            # is lost between the check and the wait.
            self._changed.clear()
            missing = [t for t in wanted if t not in self.times]
            if not missing:
                return {t: self.times[t] for t in wanted}
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{len(missing)} of {len(wanted)} messages never arrived "
                                   f"(first missing: {missing[0]!r})")
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                pass
