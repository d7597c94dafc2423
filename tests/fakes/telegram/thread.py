"""The fake in a thread of its own, with its own event loop: one server (and its RSA key)
serves a whole test module although each test runs on a fresh event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from .server import FakeTelegram

T = TypeVar("T")


class TelegramThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                        name="fake-telegram")
        self.fake: FakeTelegram

    def start(self) -> FakeTelegram:
        self._thread.start()
        self.fake = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(120)
        return self.fake

    async def _start(self) -> FakeTelegram:
        return await FakeTelegram().__aenter__()

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.fake.__aexit__(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    async def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run one of the fake's coroutines (a person sending a message) on its loop."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coroutine,
                                                                          self.loop))

    async def call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call one of the fake's plain methods on its loop (they touch its connections)."""
        async def wrapped() -> T:
            return function(*args, **kwargs)
        return await self.run(wrapped())
