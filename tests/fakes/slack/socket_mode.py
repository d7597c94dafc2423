"""Socket Mode: the WebSocket an app opens with the URL from apps.connections.open.

Slack's side of the protocol: `hello` on connect, then `events_api` envelopes; the client
acknowledges each with `{"envelope_id": ...}`. Envelopes still unacknowledged when their
connection goes away are sent again on the next connection with `retry_attempt` + 1.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import uuid
from typing import Any

import attrs
from aiohttp import WSMsgType, web

from .models import Activity, SlackApp


@attrs.define(eq=False)
class Connection:
    id: int
    app: SlackApp
    ws: web.WebSocketResponse
    # Everything the client sent (acks included), parsed.
    received: list[dict[str, Any]] = attrs.Factory(list)

    @property
    def open(self) -> bool:
        return not self.ws.closed


@attrs.define(eq=False)
class Envelope:
    id: str
    app: SlackApp
    payload: dict[str, Any]
    type: str = "events_api"
    retry_attempt: int = 0
    retry_reason: str = ""
    acked: bool = False
    ack: dict[str, Any] | None = None
    # The connection it was last written to; None while no connection was open.
    connection: Connection | None = None
    sends: int = 0

    def wire(self) -> dict[str, Any]:
        return {"envelope_id": self.id, "payload": self.payload, "type": self.type,
                "accepts_response_payload": False, "retry_attempt": self.retry_attempt,
                "retry_reason": self.retry_reason}


class SocketModeHub:
    def __init__(self, activity: Activity) -> None:
        self.activity = activity
        self.base_ws_url = ""
        self.tickets: dict[str, SlackApp] = {}
        self.connections: list[Connection] = []
        self.envelopes: dict[str, Envelope] = {}
        self._ids = itertools.count(1)
        self._rotation = itertools.count()

    def _notify(self) -> None:
        self.activity.notify()

    # ---- wiring ----------------------------------------------------------------------------

    def issue_url(self, app: SlackApp) -> str:
        ticket = str(uuid.uuid4())
        self.tickets[ticket] = app
        return f"{self.base_ws_url}/ws?ticket={ticket}&app_id={app.id}"

    def _open(self, app: SlackApp | None) -> list[Connection]:
        return [c for c in self.connections if c.open and (app is None or c.app is app)]

    async def _send(self, envelope: Envelope, connection: Connection) -> None:
        envelope.connection = connection
        envelope.sends += 1
        try:
            await connection.ws.send_str(json.dumps(envelope.wire()))
        except (ConnectionError, RuntimeError):
            # The socket died under us; the envelope waits for the next connection.
            pass
        self._notify()

    async def _flush(self, app: SlackApp) -> None:
        """Send what never went out, and again what went out on a connection now gone."""
        for envelope in list(self.envelopes.values()):
            if envelope.app is not app or envelope.acked:
                continue
            targets = self._open(app)
            if envelope.connection is not None and envelope.connection in targets:
                continue
            if not targets:
                return
            if envelope.connection is not None:
                envelope.retry_attempt += 1
                envelope.retry_reason = "timeout"
            await self._send(envelope, targets[next(self._rotation) % len(targets)])

    # ---- the WebSocket endpoint ------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        app = self.tickets.get(request.query.get("ticket", ""))
        if app is None:
            return web.Response(status=401, text="invalid or expired ticket")
        # aiohttp answers the SDK's "sdk-ping-pong:<t>" pings with pongs (autoping).
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        connection = Connection(id=next(self._ids), app=app, ws=ws)
        self.connections.append(connection)
        self._notify()
        try:
            await ws.send_json({
                "type": "hello", "num_connections": len(self._open(app)),
                "debug_info": {"host": f"applink-fake-{connection.id}", "build_number": 1,
                               "approximate_connection_time": 18060},
                "connection_info": {"app_id": app.id}})
            await self._flush(app)
            async for message in ws:
                if message.type != WSMsgType.TEXT:
                    continue
                with contextlib.suppress(ValueError):
                    data = json.loads(message.data)
                    if isinstance(data, dict):
                        connection.received.append(data)
                        self._on_ack(data)
        finally:
            self.connections.remove(connection)
            self._notify()
            if self._open(app):
                await self._flush(app)
        return ws

    def _on_ack(self, data: dict[str, Any]) -> None:
        envelope = self.envelopes.get(str(data.get("envelope_id", "")))
        if envelope is not None and not envelope.acked:
            envelope.acked = True
            envelope.ack = data
            self._notify()

    # ---- used by the event router ----------------------------------------------------------

    async def deliver(self, app: SlackApp, payload: dict[str, Any]) -> Envelope:
        envelope = Envelope(id=str(uuid.uuid4()), app=app, payload=payload)
        self.envelopes[envelope.id] = envelope
        targets = self._open(app)
        if targets:
            await self._send(envelope, targets[next(self._rotation) % len(targets)])
        return envelope

    # ---- test-facing -----------------------------------------------------------------------

    def open_connections(self, app: SlackApp | None = None) -> list[Connection]:
        return self._open(app)

    def unacked(self, app: SlackApp | None = None) -> list[Envelope]:
        return [e for e in self.envelopes.values()
                if not e.acked and (app is None or e.app is app)]

    def for_event(self, event_id: str) -> Envelope | None:
        for envelope in self.envelopes.values():
            if envelope.payload.get("event_id") == event_id:
                return envelope
        return None

    async def wait_connected(self, count: int = 1, app: SlackApp | None = None
                             ) -> list[Connection]:
        await self.activity.until(lambda: len(self._open(app)) >= count,
                                  f"{count} Socket Mode connection(s)")
        return self._open(app)

    async def wait_acked(self, envelope_id: str | None = None) -> list[Envelope]:
        """Wait for one envelope's ack, or (no id) for every envelope sent so far."""
        def wanted() -> list[Envelope]:
            return ([self.envelopes[envelope_id]] if envelope_id
                    else list(self.envelopes.values()))
        await self.activity.until(lambda: all(e.acked for e in wanted()),
                                  f"ack of {envelope_id or 'every envelope'}")
        return wanted()

    async def send_disconnect(self, reason: str = "refresh_requested",
                              app: SlackApp | None = None) -> None:
        """Slack's notice that the client should open a new connection (the SDK does)."""
        for connection in self._open(app):
            with contextlib.suppress(ConnectionError, RuntimeError):
                await connection.ws.send_json({
                    "type": "disconnect", "reason": reason,
                    "debug_info": {"host": f"applink-fake-{connection.id}"}})

    async def drop_connections(self, app: SlackApp | None = None) -> None:
        """Close the sockets from Slack's side without notice."""
        for connection in self._open(app):
            await connection.ws.close(code=1011, message=b"server restart")

    async def redeliver_unacked(self, app: SlackApp | None = None) -> list[Envelope]:
        """What Slack does after its ack timeout: resend with retry_attempt + 1."""
        resent = []
        for envelope in self.unacked(app):
            targets = self._open(envelope.app)
            if not targets:
                continue
            envelope.retry_attempt += 1
            envelope.retry_reason = "timeout"
            await self._send(envelope, targets[next(self._rotation) % len(targets)])
            resent.append(envelope)
        return resent

    async def send_raw(self, message: dict[str, Any], app: SlackApp | None = None) -> None:
        for connection in self._open(app):
            await connection.ws.send_json(message)

    def invalidate_tickets(self) -> None:
        """Make every issued URL stale (the client must call apps.connections.open again)."""
        self.tickets.clear()

    async def close(self) -> None:
        for connection in list(self.connections):
            with contextlib.suppress(Exception):
                await connection.ws.close()
