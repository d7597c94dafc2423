"""Traffic in both directions at once through the Slack fake, and the count at each end.

One linked person (a Matrix user whose Slack account is linked, with a `map slack TEAM/*`
rule) and one remote person (bob, on Slack) share many channels, each mapped to a portal. In
every channel bob posts N messages while the person sends N into its portal, all channels at
once. Then both ends are read back as a person would see them: each portal's history (every
message event, oldest first) and each Slack channel's messages. Every message must be there
exactly once, in the order it was sent in its room.

Shared by tests/test_load.py (correctness only) and bench/load.py (which also reads the
latency of each message: from the start of its send to its first sighting at the other end).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp

from bench.arrivals import Arrivals
from bench.matrix import RawClient, SyncWatcher, message_filter
from tests.fakes.slack import Channel, FakeSlack, Team, User

# Failing, not a speed target: how long a burst may take on a loaded machine before the
# run is called failed (a full-size run moves 40,000 messages through one Synapse).
DEADLINE = 1800.0

def tag(run: str, direction: str, lane: int, index: int) -> str:
    """A message body no other message has: how each message is recognised at either end."""
    return f"rfload {run} {direction} {lane} {index}"


@dataclass
class Lane:
    """One Slack channel and the portal it is mapped to."""

    channel: Channel
    portal: str


class MatrixSide(SyncWatcher):
    """The person's /sync: the rooms they are invited to (by name) and when each message body
    first became visible to them, with its sender."""

    sync_filter = message_filter(state=("m.room.name",))  # the names an invite shows
    sync_seconds = 90.0
    task_name = "load-sync"

    def __init__(self, client: RawClient) -> None:
        super().__init__(client)
        self.senders: dict[str, str] = {}
        self.invites: dict[str, str] = {}  # room name -> room id
        self._invited = asyncio.Event()

    async def invited(self, name: str, within: float = 300.0) -> str:
        """The room named `name` the person was invited to, once the invite came."""
        deadline = time.monotonic() + within
        while name not in self.invites:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"never invited to a room named {name!r}")
            try:
                await asyncio.wait_for(self._invited.wait(), min(remaining, 1.0))
            except TimeoutError:
                pass
        return self.invites[name]

    def rooms_synced(self, rooms: dict[str, Any], now: float) -> None:
        for room_id, room in rooms.get("invite", {}).items():
            for event in room.get("invite_state", {}).get("events", []):
                if event.get("type") == "m.room.name":
                    self.invites[event.get("content", {}).get("name", "")] = room_id
        super().rooms_synced(rooms, now)
        if rooms.get("invite"):
            self._invited.set()
            self._invited = asyncio.Event()

    def message_seen(self, event: dict[str, Any], body: str, now: float) -> None:
        self.senders.setdefault(body, event.get("sender", ""))
        super().message_seen(event, body, now)


class SlackSide:
    """When each message by `author` first appeared in one of the watched channels. Re-checked
    after every request the fake answers, so the time is when the bridge's post landed."""

    def __init__(self, slack: FakeSlack, author: User) -> None:
        self.slack = slack
        self.author = author.id
        self.visible = Arrivals()
        self.channels: list[Channel] = []
        self._seen: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None

    def watch(self, channels: Sequence[Channel]) -> None:
        for channel in channels:
            self._seen.setdefault(channel.id, len(channel.messages))
            self.channels.append(channel)

    def _scan(self) -> bool:
        now = time.perf_counter()
        for channel in self.channels:
            start = self._seen[channel.id]
            if len(channel.messages) > start:
                for message in channel.messages[start:]:
                    if message.user == self.author:
                        self.visible.record(message.text, now)
                self._seen[channel.id] = len(channel.messages)
        return False

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="load-slack")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            try:
                await self.slack.wait_until(self._scan, "nothing (the scan never ends)")
            except AssertionError:
                pass  # the fake's own deadline for a single wait: keep watching


@dataclass
class Burst:
    """One burst's tags per lane and direction, and when each send started."""

    run: str
    messages: int
    to_matrix: list[list[str]]
    to_remote: list[list[str]]
    started: dict[str, float] = field(default_factory=dict)
    first_send: float = 0.0

    def all_to_matrix(self) -> list[str]:
        return [t for lane in self.to_matrix for t in lane]

    def all_to_remote(self) -> list[str]:
        return [t for lane in self.to_remote for t in lane]


Send = Callable[[int, str], Awaitable[None]]


async def both_ways(lanes: int, messages: int, to_matrix: Send, to_remote: Send,
                    run: str | None = None) -> Burst:
    """In every lane at once, `messages` sent each way, one after another per lane and
    direction (so the order within a room is defined). Returns when every send returned."""
    run = run or secrets.token_hex(3)
    burst = Burst(run, messages,
                  [[tag(run, "in", lane, i) for i in range(messages)] for lane in range(lanes)],
                  [[tag(run, "out", lane, i) for i in range(messages)]
                   for lane in range(lanes)])

    async def lane_task(send: Send, lane: int, tags: list[str]) -> None:
        for body in tags:
            burst.started[body] = time.perf_counter()
            await send(lane, body)

    burst.first_send = time.perf_counter()
    await asyncio.gather(
        *(lane_task(to_matrix, lane, burst.to_matrix[lane]) for lane in range(lanes)),
        *(lane_task(to_remote, lane, burst.to_remote[lane]) for lane in range(lanes)))
    return burst


# ---- setting up the rooms ---------------------------------------------------------------------

async def map_channels(slack: FakeSlack, team: Team, person: User, bob: User,
                       side: MatrixSide, rooms: int, parallel: int = 20) -> list[Lane]:
    """`rooms` new public channels (bob in each); the person joins each on Slack, which their
    `map slack TEAM/*` rule turns into a portal; the person joins every portal on Matrix.
    `parallel` joins at a time, as a person's Slack client would not join a thousand at once."""
    run = secrets.token_hex(3)
    channels = [slack.create_channel(team, f"load-{run}-{i}", [bob]) for i in range(rooms)]
    gate = asyncio.Semaphore(parallel)

    async def join(channel: Channel) -> str:
        async with gate:
            await slack.join_channel(person, channel)
            room = await side.invited(f"#{channel.name}")
            await side.client.join(room)
            return room

    portals = await asyncio.gather(*(join(channel) for channel in channels))
    return [Lane(channel, portal) for channel, portal in zip(channels, portals, strict=True)]


async def warm_up(slack: FakeSlack, bob: User, person: RawClient, side: MatrixSide,
                  remote: SlackSide, lanes: list[Lane]) -> str:
    """One message each way in every lane, waited for: bob's ghost joins each portal, and
    every first-time cost (ghost profile, first send of the person's token) is paid before the
    burst. Returns bob's ghost's Matrix ID."""
    run = secrets.token_hex(3)
    burst = await both_ways(len(lanes), 1, slack_sender(slack, bob, lanes),
                            matrix_sender(person, lanes), run)
    await side.visible.wait(burst.all_to_matrix(), DEADLINE)
    await remote.visible.wait(burst.all_to_remote(), DEADLINE)
    return side.senders[burst.to_matrix[0][0]]


def slack_sender(slack: FakeSlack, bob: User, lanes: list[Lane]) -> Send:
    async def send(lane: int, body: str) -> None:
        await slack.post_message(bob, lanes[lane].channel, body)
    return send


async def send_text(client: RawClient, room: str, body: str, tries: int = 5) -> None:
    """A message PUT as a person's client does it under load: a long wait for the answer, and
    a send whose answer was lost tried again with the same transaction id (the body is
    unique, so it names the transaction), which the homeserver keeps only once."""
    txn = hashlib.sha256(body.encode()).hexdigest()[:32]
    path = f"/_matrix/client/v3/rooms/{quote(room)}/send/m.room.message/{txn}"
    for attempt in range(tries):
        try:
            await client.request("PUT", path, {"msgtype": "m.text", "body": body},
                                 seconds=300.0)
            return
        except (aiohttp.ClientError, TimeoutError):
            if attempt == tries - 1:
                raise
            await asyncio.sleep(1.0)


def matrix_sender(client: RawClient, lanes: list[Lane]) -> Send:
    async def send(lane: int, body: str) -> None:
        await send_text(client, lanes[lane].portal, body)
    return send


# ---- counting at each end ---------------------------------------------------------------------

async def room_history(client: RawClient, room: str) -> list[tuple[str, str]]:
    """(sender, body) of every message event in the room, oldest first, read with /messages
    (not /sync, which may leave gaps under load)."""
    events: list[tuple[str, str]] = []
    token = ""
    query_filter = json.dumps({"types": ["m.room.message"]})
    while True:
        query = {"dir": "b", "limit": "1000", "filter": query_filter}
        if token:
            query["from"] = token
        page = await client.request("GET", f"/_matrix/client/v3/rooms/{quote(room)}/messages",
                                    query=query)
        for event in page.get("chunk", []):
            body = event.get("content", {}).get("body")
            if isinstance(body, str):
                events.append((event.get("sender", ""), body))
        token = page.get("end", "")
        if not page.get("chunk") or not token:
            break
    events.reverse()
    return events


def compare(expected: list[str], seen: list[str]) -> dict[str, int]:
    """What became of `expected` (in send order) among `seen` (in arrival order)."""
    counts = Counter(seen)
    lost = sum(1 for t in expected if counts[t] == 0)
    duplicated = sum(counts[t] - 1 for t in expected if counts[t] > 1)
    firsts = list(dict.fromkeys(t for t in seen if t in set(expected)))
    in_order = [t for t in expected if t in set(firsts)]
    return {"lost": lost, "duplicated": duplicated,
            "out_of_order": 0 if firsts == in_order else 1}


async def count(client: RawClient, lanes: list[Lane], burst: Burst, remote_author: User,
                person_mxid: str, parallel: int = 20) -> dict[str, Any]:
    """Both ends read back. Remote -> Matrix: bob's messages in each portal (by anyone but
    the person). Matrix -> remote: the person's messages in each Slack channel, and in each
    portal only the person's own event (a second copy there would be an echo)."""
    gate = asyncio.Semaphore(parallel)

    async def read(lane: Lane) -> list[tuple[str, str]]:
        async with gate:
            return await room_history(client, lane.portal)

    histories = await asyncio.gather(*(read(lane) for lane in lanes))
    totals = {"to_matrix": Counter[str](), "to_remote": Counter[str]()}
    rooms_wrong: dict[str, list[int]] = {"to_matrix": [], "to_remote": []}
    # The first room that went wrong, as it was seen: what a report needs to show.
    example: dict[str, dict[str, Any]] = {}
    for i, (lane, history) in enumerate(zip(lanes, histories, strict=True)):
        ours = set(burst.to_matrix[i]) | set(burst.to_remote[i])
        in_matrix = [b for s, b in history if b in ours and s != person_mxid]
        # Matrix -> remote sent into this portal must not come back as anyone's message.
        echoes = [b for s, b in history if b in set(burst.to_remote[i]) and s != person_mxid]
        on_slack = [m.text for m in lane.channel.messages
                    if m.user == remote_author.id and m.text in ours]
        for direction, expected, seen in (
                ("to_matrix", burst.to_matrix[i], [b for b in in_matrix if b not in echoes]),
                ("to_remote", burst.to_remote[i], on_slack)):
            result = compare(expected, seen)
            if direction == "to_remote":
                result["duplicated"] += len(echoes)
            # Stray: a message of this burst in the wrong room or direction.
            result["stray"] = sum(1 for t in seen if t not in set(expected))
            totals[direction].update(result)
            if any(result.values()):
                rooms_wrong[direction].append(i)
                example.setdefault(direction, {"room": lane.portal, "sent": expected,
                                               "seen": seen})
    return {direction: {"expected": len(lanes) * burst.messages,
                        **{k: totals[direction][k]
                           for k in ("lost", "duplicated", "out_of_order", "stray")},
                        "rooms_wrong": rooms_wrong[direction][:10],
                        **({"example": example[direction]} if direction in example else {})}
            for direction in totals}
