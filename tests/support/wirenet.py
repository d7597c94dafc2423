"""A test-only network that lives in another process than the bridge: the "remote" is an HTTP
server in the test, the connector runs inside a bridge subprocess that the test can kill -9.

The protocol has what real networks offer for surviving crashes: events carry a sequence
number and are delivered again until the client acknowledges them (like Slack Socket Mode's
envelope acks or Telegram's update state), and sends carry an idempotency key the server
honours (like Telegram's random_id or Discord's nonce).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import web

from bridge.networks.base import (
    BridgeSink,
    Connector,
    ConnectorState,
    MatrixEdit,
    MatrixMessage,
    MatrixReaction,
    MatrixRedaction,
    RemoteMessage,
    RemoteRoom,
    RemoteUser,
    SendResult,
)

log = logging.getLogger("relayforge.test.wirenet")


class WireServer:
    """The remote network, in the test process."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []  # remote -> Matrix, in order
        self.acked: set[int] = set()  # sequence numbers the bridge has handled
        self.received: list[dict[str, Any]] = []  # Matrix -> remote sends it accepted
        self.duplicates = 0  # sends refused because their idempotency key was seen
        self._keys: dict[str, str] = {}
        self._ids = itertools.count(1)
        self._new_event = asyncio.Condition()
        self._changed = asyncio.Condition()  # a send or an ack arrived
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/events", self._events)
        app.router.add_post("/ack", self._ack)
        app.router.add_post("/send", self._send)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    async def wait(self, condition: Callable[[], bool], what: str,
                   deadline: float = 180.0) -> None:
        """Wait until `condition` holds after a send or an ack; fails naming `what`."""
        try:
            async with self._changed, asyncio.timeout(deadline):
                await self._changed.wait_for(condition)
        except TimeoutError:
            raise AssertionError(f"never happened: {what}") from None

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def emit(self, room: str, sender: str, text: str, receiver: str) -> None:
        async with self._new_event:
            self.events.append({"seq": len(self.events) + 1, "room": room, "sender": sender,
                                "text": text, "receiver": receiver})
            self._new_event.notify_all()

    def _pending(self, after: int) -> list[dict[str, Any]]:
        return [e for e in self.events[after:] if e["seq"] not in self.acked]

    async def _events(self, request: web.Request) -> web.Response:
        """Long poll: the events after the client's cursor that nobody acknowledged. A new
        connection starts from 0, so whatever was not acknowledged comes again."""
        after = int(request.query.get("after", "0"))
        async with self._new_event:
            try:
                await asyncio.wait_for(self._new_event.wait_for(
                    lambda: bool(self._pending(after))), 10)
            except TimeoutError:
                pass
            batch = self._pending(after)[:200]
        return web.json_response(batch)

    async def _ack(self, request: web.Request) -> web.Response:
        self.acked.add((await request.json())["seq"])
        await self._notify()
        return web.json_response({})

    async def _send(self, request: web.Request) -> web.Response:
        body = await request.json()
        key = body["idempotency_key"]
        if key in self._keys:
            self.duplicates += 1
            return web.json_response({"id": self._keys[key]})
        remote_id = f"w-{next(self._ids)}"
        self._keys[key] = remote_id
        self.received.append({**body, "id": remote_id})
        await self._notify()
        return web.json_response({"id": remote_id})


class WireConnector(Connector):
    """The bridge's side, running in the bridge process."""

    network = "loopback"
    requires_authorization = False  # the bot relays: there are no personas on this network

    def __init__(self, url: str, *, receive: bool = True) -> None:
        super().__init__()
        self.url = url
        # With several bridge workers, one of them receives: the wire network hands every
        # unacknowledged event to each client that polls (it has no sessions to share out).
        self.receive = receive
        self._session: aiohttp.ClientSession | None = None
        self._poller: asyncio.Task[None] | None = None
        self._workers: list[asyncio.Task[None]] = []

    async def start(self, sink: BridgeSink) -> None:
        self._session = aiohttp.ClientSession()
        if self.receive:
            self._poller = asyncio.create_task(self._poll(sink))
        self.state = ConnectorState.CONNECTED

    async def stop(self) -> None:
        for task in [self._poller, *self._workers]:
            if task is not None:
                task.cancel()
        if self._session:
            await self._session.close()
        self.state = ConnectorState.STOPPED

    async def _poll(self, sink: BridgeSink) -> None:
        """Events of different rooms are handled side by side, those of one room in order."""
        assert self._session is not None
        after = 0
        rooms: dict[str, asyncio.Queue[dict[str, Any]]] = {}
        while True:
            try:
                async with self._session.get(f"{self.url}/events",
                                             params={"after": str(after)}) as response:
                    batch = await response.json()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("Polling the wire network failed")
                await asyncio.sleep(0.5)
                continue
            for event in batch:
                after = max(after, event["seq"])
                if event["room"] not in rooms:
                    rooms[event["room"]] = asyncio.Queue()
                    self._workers.append(asyncio.create_task(
                        self._room_worker(sink, rooms[event["room"]])))
                rooms[event["room"]].put_nowait(event)

    async def _room_worker(self, sink: BridgeSink, queue: asyncio.Queue[dict[str, Any]]
                           ) -> None:
        assert self._session is not None
        while True:
            event = await queue.get()
            while True:
                try:
                    await sink.handle_remote_event(RemoteMessage(
                        room=RemoteRoom(event["room"], event["room"]),
                        sender=RemoteUser(event["sender"]), receiver=event["receiver"],
                        message_id=f"e-{event['seq']}", text=event["text"]))
                    # Acknowledged only once it is in Matrix: a crash before means it comes
                    # again, and the bridge drops the duplicate.
                    async with self._session.post(f"{self.url}/ack",
                                                  json={"seq": event["seq"]}):
                        pass
                    break
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("Handling wire event %s failed; trying again", event["seq"])
                    await asyncio.sleep(0.5)

    async def send_message(self, event: MatrixMessage) -> SendResult:
        assert self._session is not None
        async with self._session.post(f"{self.url}/send", json={
                "room": event.room.remote_id, "text": event.text,
                "idempotency_key": event.event_id}) as response:
            response.raise_for_status()
            return SendResult((await response.json())["id"])

    async def send_edit(self, event: MatrixEdit) -> None:
        raise NotImplementedError

    async def send_redaction(self, event: MatrixRedaction) -> None:
        raise NotImplementedError

    async def send_reaction(self, event: MatrixReaction) -> SendResult:
        raise NotImplementedError
