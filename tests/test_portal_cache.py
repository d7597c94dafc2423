"""What the bridge keeps in memory (portals, ghosts, room state) follows what changes."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable

import pytest
from mautrix.api import Method, Path
from mautrix.errors import IntentError
from mautrix.types import EventType, Membership, PowerLevelStateEventContent, RoomID

from bridge.app import Bridge
from bridge.networks.base import RemoteMessage, RemoteRoom, RemoteUser

from .support.matrix import DEADLINE, MatrixUser


def remote_names() -> tuple[RemoteRoom, RemoteUser]:
    tag = secrets.token_hex(3)
    return (RemoteRoom(f"chan-{tag}", name=f"Remote channel {tag}"),
            RemoteUser(f"u-{tag}", display_name=f"Rita {tag}"))


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + 30
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"never: {what}")
        await asyncio.sleep(0.1)


async def message_arrives(user: MatrixUser, portal: RoomID, text: str) -> None:
    await user.wait_for_event(
        portal, lambda e: e.type == EventType.ROOM_MESSAGE and e.content.body == text, text)


async def test_someone_who_left_is_invited_again_by_the_next_message(bridge, loopback,
                                                                     new_user):
    alice = await new_user("alice")
    room, rita = remote_names()
    await loopback.emit(RemoteMessage(room=room, sender=rita, receiver=alice.mxid,
                                      message_id="r-1", text="first"))
    portal = await alice.wait_for_invite()
    await message_arrives(alice, portal, "first")
    await loopback.emit(RemoteMessage(room=room, sender=rita, receiver=alice.mxid,
                                      message_id="r-2", text="second"))
    await message_arrives(alice, portal, "second")

    await alice.client.leave_room(portal)
    store = bridge.storage.state_store

    async def left() -> bool:
        return await store.get_membership(portal, alice.mxid) == Membership.LEAVE

    await eventually(left, "the bridge saw alice leave")
    await loopback.emit(RemoteMessage(room=room, sender=rita, receiver=alice.mxid,
                                      message_id="r-3", text="third"))
    assert await alice.wait_for_invite() == portal
    await message_arrives(alice, portal, "third")


async def name_shown(user, room: str, ghost: str, expected: str) -> None:
    """Wait until the room's member state shows the ghost with this name."""
    async with asyncio.timeout(DEADLINE):
        while True:
            member = await user.client.get_state_event(room, EventType.ROOM_MEMBER, ghost)
            if member.displayname == expected:
                return
            await asyncio.sleep(0.1)


async def test_a_ghost_follows_its_remote_name_back_and_forth(bridge, loopback, new_user):
    alice = await new_user("alice")
    room, rita = remote_names()
    names = [rita.display_name, "Rita Renamed", rita.display_name]
    portal = None
    for i, name in enumerate(names):
        sender = RemoteUser(rita.remote_id, display_name=name)
        await loopback.emit(RemoteMessage(room=room, sender=sender, receiver=alice.mxid,
                                          message_id=f"r-{i}", text=f"as {name} {i}"))
        if portal is None:
            portal = await alice.wait_for_invite()
        await message_arrives(alice, portal, f"as {name} {i}")
        ghost = bridge.router.ghosts.templates["loopback"].mxid(rita.remote_id)
        # Synapse rewrites the ghost's memberships in the background after a profile change.
        await name_shown(alice, portal, ghost, f"{name} (Loopback)")


async def test_power_levels_changed_in_matrix_apply_to_the_next_send(bridge: Bridge,
                                                                     loopback, new_user):
    alice = await new_user("alice")
    room, rita = remote_names()
    await loopback.emit(RemoteMessage(room=room, sender=rita, receiver=alice.mxid,
                                      message_id="r-1", text="before"))
    portal = await alice.wait_for_invite()
    await message_arrives(alice, portal, "before")
    bot = bridge.router.portals.bot_intent
    store = bridge.storage.state_store

    async def set_events_default(level: int) -> None:
        levels = await bot.get_power_levels(portal, ignore_cache=True)
        levels.events_default = level
        # Sent past mautrix's own bookkeeping: the change must reach the bridge the way a
        # person's change does, as an event in a transaction.
        await bot.api.request(Method.PUT,
                              Path.v3.rooms[portal].state[EventType.ROOM_POWER_LEVELS],
                              levels.serialize())

        async def seen() -> bool:
            current = await store.get_power_levels(portal)
            return isinstance(current, PowerLevelStateEventContent) and (
                current.events_default == level)

        await eventually(seen, f"the bridge saw events_default {level}")

    await set_events_default(50)
    # The ghost (level 0) may not speak now: mautrix refuses before asking the homeserver.
    with pytest.raises(IntentError):
        await loopback.emit(RemoteMessage(room=room, sender=rita, message_id="r-2",
                                          text="muted"))
    await set_events_default(0)
    await loopback.emit(RemoteMessage(room=room, sender=rita, message_id="r-3", text="after"))
    await message_arrives(alice, portal, "after")
