"""A new person's first command against a known person's command, through the bot.

New person: registered just now; they open a direct chat with the bot, wait for its welcome
(the room is then their management room) and send `help`. Known person: someone whose account
and spaces exist sends `help` in their management room. Each is timed from the send until the
person's /sync shows the bot's answer; the known person goes first in each sample, and the
new person's spaces are made before the next sample starts. Ratio = new/known (lower is better;
target <= 1.2).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import statistics
import time
from typing import Any

from .harness import Harness
from .matrix import RawClient

TARGET_RATIO = 1.2
DEADLINE = 60.0


class Person:
    """A Matrix user and their /sync position: answers are seen as the homeserver hands them
    out (long-poll), not by polling."""

    def __init__(self, client: RawClient) -> None:
        self.client = client
        self.since = ""

    async def start(self) -> None:
        await self.client.whoami()
        first = await self.client.request("GET", "/_matrix/client/v3/sync",
                                          query={"timeout": "0", "filter": _FILTER})
        self.since = first["next_batch"]

    async def wait_for_bot(self, room: str, bot: str, contains: str) -> float:
        """When a message from the bot containing `contains` reached the person."""
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            data = await self.client.request(
                "GET", "/_matrix/client/v3/sync",
                query={"timeout": "10000", "since": self.since, "filter": _FILTER})
            now = time.perf_counter()
            self.since = data["next_batch"]
            timeline = data.get("rooms", {}).get("join", {}).get(room, {}).get("timeline", {})
            for event in timeline.get("events", []):
                if event.get("sender") == bot and contains in str(
                        event.get("content", {}).get("body", "")):
                    return now
        raise TimeoutError(f"the bot never said {contains!r} in {room}")

    async def open_management_room(self, bot: str) -> str:
        data = await self.client.request("POST", "/_matrix/client/v3/createRoom", {
            "is_direct": True, "invite": [bot], "preset": "trusted_private_chat"})
        room = data["room_id"]
        await self.wait_for_bot(room, bot, "management room")
        return room

    async def command(self, room: str, bot: str, text: str, answer: str) -> float:
        started = time.perf_counter()
        await self.client.send_text(room, text)
        return await self.wait_for_bot(room, bot, answer) - started


_FILTER = json.dumps({"presence": {"types": []}, "account_data": {"types": []},
                      "room": {"timeline": {"limit": 50, "types": ["m.room.message"]},
                               "state": {"types": []}, "ephemeral": {"types": []},
                               "account_data": {"types": []}}})
HELP_ANSWER = "help"  # every answer to `help` names the commands, `help` among them


async def new_person(h: Harness) -> Person:
    assert h.synapse is not None
    name = f"benchnew{secrets.token_hex(4)}"
    info = await asyncio.to_thread(h.synapse.register_user, name, secrets.token_urlsafe(12),
                                   False)
    person = Person(h.client(info["access_token"], connections=10))
    await person.start()
    return person


async def first_contact(h: Harness, samples: int) -> dict[str, Any]:
    assert h.bridge is not None and h.bridge.appservice is not None
    bot = h.bridge.appservice.intent.mxid
    known = await new_person(h)
    known_room = await known.open_management_room(bot)
    await known.command(known_room, bot, "help", HELP_ANSWER)
    await asyncio.sleep(1.0)  # their spaces are made after that first answer
    new_ms: list[float] = []
    known_ms: list[float] = []
    for _ in range(samples):
        person = await new_person(h)
        room = await person.open_management_room(bot)
        known_ms.append(await known.command(known_room, bot, "help", HELP_ANSWER) * 1000)
        new_ms.append(await person.command(room, bot, "help", HELP_ANSWER) * 1000)
        # The new person's spaces are made after that answer: not during the next sample.
        await asyncio.sleep(1.5)
    new_median, known_median = statistics.median(new_ms), statistics.median(known_ms)
    return {"samples": samples, "target_ratio": TARGET_RATIO,
            "new_person_ms": {"median": round(new_median, 1), "max": round(max(new_ms), 1)},
            "known_person_ms": {"median": round(known_median, 1),
                                "max": round(max(known_ms), 1)},
            "ratio": round(new_median / known_median, 2)}
