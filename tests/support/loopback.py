"""A test-only connector: a "network" living in the test's memory.

It lets end-to-end tests drive the core exactly as a real connector would, through
`networks.base`, and records what the core delivered to it.
"""

from __future__ import annotations

import asyncio
import itertools

from bridge.networks.base import (
    Connector,
    MatrixEdit,
    MatrixEvent,
    MatrixMessage,
    MatrixReaction,
    MatrixRedaction,
    RemoteReaction,
    RemoteUser,
    SendResult,
)

from .matrix import DEADLINE


class LoopbackConnector(Connector):
    network = "loopback"

    def __init__(self, requires_authorization: bool = False) -> None:
        super().__init__()
        # Off by default: routing tests have no linked personas to mint tokens for.
        self.requires_authorization = requires_authorization
        self.received: asyncio.Queue[MatrixEvent] = asyncio.Queue()
        self._ids = itertools.count(1)

    async def next_received(self) -> MatrixEvent:
        """The next event the core delivered; fails the test if none comes."""
        async with asyncio.timeout(DEADLINE):
            return await self.received.get()

    async def send_message(self, event: MatrixMessage) -> SendResult:
        await self.received.put(event)
        return SendResult(f"lb-msg-{next(self._ids)}")

    async def send_edit(self, event: MatrixEdit) -> None:
        await self.received.put(event)

    async def send_redaction(self, event: MatrixRedaction) -> None:
        await self.received.put(event)

    async def send_reaction(self, event: MatrixReaction) -> SendResult:
        await self.received.put(event)
        return SendResult(f"lb-react-{next(self._ids)}")


class EagerLoopbackConnector(LoopbackConnector):
    """A loopback network whose people react to a message before its send has returned,
    as fast remote clients do (a read marker or a reaction racing the send's answer)."""

    def __init__(self) -> None:
        super().__init__()
        self.answers: list[asyncio.Task[None]] = []

    async def send_message(self, event: MatrixMessage) -> SendResult:
        result = await super().send_message(event)
        self.answers.append(asyncio.create_task(self.emit(RemoteReaction(
            room=event.room, sender=RemoteUser("eager"), reaction_id=f"re-{result.remote_id}",
            target_id=result.remote_id, key="👀"))))
        await asyncio.sleep(0.2)  # the answer is looked up while the send is still returning
        return result
