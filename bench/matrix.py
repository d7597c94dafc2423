"""The Matrix side of the benchmark, on plain aiohttp.

Plain HTTP on purpose: the baseline must be the homeserver alone, without the client library
the bridge uses, so whatever mautrix costs the bridge counts as the bridge's cost. The same
client sends as a person (their access token) and as an appservice user (the as_token with
`user_id` masquerading).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
import time
from typing import Any
from urllib.parse import quote

import aiohttp

from .arrivals import Arrivals


def message_filter(state: tuple[str, ...] = ()) -> str:
    """A /sync filter with only what the watcher needs: message events, many per room, so a
    busy sync is not cut short ("limited") and no message is skipped; and the room state
    events of the types in `state`."""
    return json.dumps({
        "presence": {"types": []},
        "account_data": {"types": []},
        "room": {
            "timeline": {"limit": 1000, "types": ["m.room.message"]},
            "state": {"types": list(state)},
            "ephemeral": {"types": []},
            "account_data": {"types": []},
        },
    })


class MatrixError(RuntimeError):
    pass


class RawClient:
    def __init__(self, base_url: str, token: str, user_id: str | None = None,
                 connections: int = 100) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        # Set for an appservice user: every request masquerades as them.
        self.masquerade = user_id
        self.user_id = user_id
        self.session = aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {token}"},
            connector=aiohttp.TCPConnector(limit=connections),
        )
        self._txn = itertools.count()
        self._txn_prefix = secrets.token_hex(4)

    async def close(self) -> None:
        await self.session.close()

    async def request(self, method: str, path: str, body: Any = None,
                      query: dict[str, str] | None = None,
                      seconds: float = 60.0) -> dict[str, Any]:
        params = dict(query or {})
        if self.masquerade:
            params["user_id"] = self.masquerade
        async with self.session.request(
            method, f"{self.base_url}{path}", json=body, params=params,
            timeout=aiohttp.ClientTimeout(total=seconds),
        ) as response:
            data = await response.json(content_type=None)
            if response.status >= 400:
                raise MatrixError(f"{method} {path}: {response.status} {data}")
            return data

    async def whoami(self) -> str:
        self.user_id = (await self.request("GET", "/_matrix/client/v3/account/whoami"))[
            "user_id"]
        return self.user_id

    async def send_text(self, room_id: str, body: str) -> str:
        txn = f"{self._txn_prefix}-{next(self._txn)}"
        path = (f"/_matrix/client/v3/rooms/{quote(room_id)}/send/m.room.message/"
                f"{quote(txn)}")
        data = await self.request("PUT", path, {"msgtype": "m.text", "body": body})
        return data["event_id"]

    async def create_room(self, name: str, invite: list[str]) -> str:
        data = await self.request("POST", "/_matrix/client/v3/createRoom",
                                  {"name": name, "invite": invite, "preset": "private_chat"})
        return data["room_id"]

    async def join(self, room_id: str) -> None:
        await self.request("POST", f"/_matrix/client/v3/join/{quote(room_id)}", {})

    async def unlimit_messages(self, user_id: str) -> None:
        """Admin API: no message rate limit for `user_id` (the caller must be an admin)."""
        await self.request(
            "POST", f"/_synapse/admin/v1/users/{quote(user_id)}/override_ratelimit",
            {"messages_per_second": 0, "burst_count": 0})


class SyncWatcher:
    """A person's /sync loop: records when each message body first became visible to them.

    What it asks for and what it does with each sync can be extended (tests/support/load.py
    also follows invites and senders): `sync_filter`, `sync_seconds`, `rooms_synced` and
    `message_seen`."""

    sync_filter = message_filter()
    sync_seconds = 60.0  # how long one long-poll /sync may take before it is tried again
    task_name = "sync-watcher"

    def __init__(self, client: RawClient) -> None:
        self.client = client
        self.visible = Arrivals()
        # Syncs the homeserver cut short: a message in the gap would be missed, so we count them
        # and report them rather than hide them.
        self.limited = 0
        self._rooms: set[str] = set()
        self._since: str | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        # The first sync only positions us: what happened before the benchmark is not counted.
        first = await self.client.request("GET", "/_matrix/client/v3/sync",
                                          query={"filter": self.sync_filter, "timeout": "0"})
        self._since = first["next_batch"]
        self._task = asyncio.create_task(self._loop(), name=self.task_name)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            try:
                data = await self.client.request(
                    "GET", "/_matrix/client/v3/sync", seconds=self.sync_seconds,
                    query={"filter": self.sync_filter, "timeout": "30000",
                           "since": self._since or ""})
            except (aiohttp.ClientError, MatrixError, TimeoutError):
                await asyncio.sleep(0.2)  # a hiccup; the next sync catches up from `since`
                continue
            now = time.perf_counter()
            self._since = data["next_batch"]
            self.rooms_synced(data.get("rooms", {}), now)

    def rooms_synced(self, rooms: dict[str, Any], now: float) -> None:
        """One sync's `rooms`, seen at `now`: every message body in a joined room's
        timeline."""
        for room_id, room in rooms.get("join", {}).items():
            timeline = room.get("timeline", {})
            # A room just joined always comes "limited" (its history starts before us):
            # only a gap in a room we already follow can hide a benchmark message.
            if room_id in self._rooms:
                self.limited += bool(timeline.get("limited"))
            self._rooms.add(room_id)
            for event in timeline.get("events", []):
                body = event.get("content", {}).get("body")
                if isinstance(body, str):
                    self.message_seen(event, body, now)

    def message_seen(self, event: dict[str, Any], body: str, now: float) -> None:
        self.visible.record(body, now)
