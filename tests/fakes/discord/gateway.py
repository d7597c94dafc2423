"""The fake Gateway (WebSocket, JSON, no compression): HELLO, IDENTIFY -> READY and a
GUILD_CREATE per guild, heartbeats, RESUME (missed events replayed), RECONNECT and
INVALID_SESSION on demand, and dispatches.

Every dispatch is numbered in its session and kept, so a client that RESUMEs after a drop gets
what it missed; one that had its session invalidated does not (it must catch up by itself)."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Callable
from typing import Any

from aiohttp import WSMsgType, web

from .models import Activity

log = logging.getLogger("fake.discord.gateway")

HELLO, HEARTBEAT, IDENTIFY, RESUME, RECONNECT, INVALID_SESSION, HEARTBEAT_ACK = (
    10, 1, 2, 6, 7, 9, 11)


class GatewaySession:
    def __init__(self, intents: int) -> None:
        self.id = secrets.token_hex(16)
        self.intents = intents
        self.seq = 0
        self.log: list[dict[str, Any]] = []


class Gateway:
    def __init__(self, activity: Activity, bot_token: Callable[[], str],
                 ready: Callable[[], dict[str, Any]],
                 guilds: Callable[[], list[dict[str, Any]]]) -> None:
        self.activity = activity
        self._bot_token = bot_token
        self._ready = ready
        self._guilds = guilds
        self.url = ""
        self.session: GatewaySession | None = None
        self.ws: web.WebSocketResponse | None = None
        self.identifies = 0
        self.resumes = 0
        self.heartbeats = 0
        # Frames the client sent (op, d), for assertions.
        self.received: list[tuple[int, Any]] = []
        self._lock = asyncio.Lock()
        # Close code to answer an IDENTIFY with (4014: a privileged intent is not enabled).
        self.refuse_identify: int | None = None

    @property
    def connected(self) -> bool:
        return self.ws is not None and not self.ws.closed and self.session is not None

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        await ws.send_str(json.dumps({"op": HELLO, "d": {"heartbeat_interval": 41250},
                                      "s": None, "t": None}))
        try:
            async for frame in ws:
                if frame.type != WSMsgType.TEXT:
                    continue
                message = json.loads(frame.data)
                op, data = message.get("op"), message.get("d")
                self.received.append((op, data))
                if op == HEARTBEAT:
                    self.heartbeats += 1
                    await ws.send_str(json.dumps({"op": HEARTBEAT_ACK, "d": None}))
                elif op == IDENTIFY:
                    await self._identify(ws, data)
                elif op == RESUME:
                    await self._resume(ws, data)
                self.activity.notify()
        finally:
            if self.ws is ws:
                self.ws = None
            self.activity.notify()
        return ws

    async def _identify(self, ws: web.WebSocketResponse, data: dict[str, Any]) -> None:
        if data.get("token") != self._bot_token():
            await ws.close(code=4004, message=b"Authentication failed.")
            return
        if self.refuse_identify:
            await ws.close(code=self.refuse_identify, message=b"Disallowed intent(s).")
            return
        async with self._lock:
            self.identifies += 1
            self.session = GatewaySession(int(data.get("intents") or 0))
            self.ws = ws
            ready = {**self._ready(), "session_id": self.session.id,
                     "resume_gateway_url": self.url}
            await self._send(ws, "READY", ready)
            for guild in self._guilds():
                await self._send(ws, "GUILD_CREATE", guild)

    async def _resume(self, ws: web.WebSocketResponse, data: dict[str, Any]) -> None:
        session = self.session
        if (session is None or data.get("session_id") != session.id
                or data.get("token") != self._bot_token()):
            await ws.send_str(json.dumps({"op": INVALID_SESSION, "d": False}))
            return
        async with self._lock:
            self.resumes += 1
            self.ws = ws
            since = int(data.get("seq") or 0)
            for frame in session.log:
                if frame["s"] > since:
                    await ws.send_str(json.dumps(frame))
            await self._send(ws, "RESUMED", {})

    async def _send(self, ws: web.WebSocketResponse, kind: str, data: dict[str, Any]) -> None:
        assert self.session is not None
        self.session.seq += 1
        frame = {"op": 0, "t": kind, "s": self.session.seq, "d": data}
        if kind not in ("READY", "RESUMED"):
            self.session.log.append(frame)
        if not ws.closed:
            try:
                await ws.send_str(json.dumps(frame))
            except ConnectionError:
                pass  # the frame stays in the session's log for a RESUME

    async def dispatch(self, kind: str, data: dict[str, Any]) -> None:
        """Send an event to the connected bot (or keep it for its RESUME when dropped)."""
        async with self._lock:
            if self.session is None:
                return
            ws = self.ws
            if ws is None or ws.closed:
                self.session.seq += 1
                self.session.log.append({"op": 0, "t": kind, "s": self.session.seq, "d": data})
                return
            await self._send(ws, kind, data)
        self.activity.notify()

    # ---- faults on demand -------------------------------------------------------------------

    async def drop(self) -> None:
        """The connection goes away (code 4000, resumable): the client reconnects and
        RESUMEs; what was dispatched meanwhile is replayed."""
        async with self._lock:
            ws, self.ws = self.ws, None
        if ws is not None:
            await ws.close(code=4000, message=b"Unknown error")

    async def invalidate(self) -> None:
        """INVALID_SESSION (not resumable): the client IDENTIFYs afresh; nothing is replayed."""
        async with self._lock:
            ws, self.ws = self.ws, None
            self.session = None
        if ws is not None and not ws.closed:
            await ws.send_str(json.dumps({"op": INVALID_SESSION, "d": False}))

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
