"""The portal cache holds at most `bridge.portal_cache_size` rows, and the Matrix room-state
copy at most `bridge.room_state_cache_size` rooms: rooms they dropped keep relaying both
ways, into the same Matrix room (real Synapse, both databases)."""

from __future__ import annotations

from collections.abc import Callable

from mautrix.types import RoomID

from bridge.app import Bridge
from bridge.networks.base import MatrixMessage, RemoteMessage, RemoteRoom, RemoteUser

from .support.matrix import MatrixUser
from .test_portal_cache import message_arrives, remote_names

SIZE = 2  # rooms each cache keeps in these tests

Opened = tuple[RemoteRoom, RemoteUser, RoomID]  # remote room, its person, its portal


class CacheRooms:
    """A bridge whose cache keeps SIZE rooms, alice, and the remote rooms opened to her;
    `cached` counts the rooms the cache holds."""

    def __init__(self, bridge: Bridge, alice: MatrixUser, cached: Callable[[], int]) -> None:
        self.bridge = bridge
        self.loopback = bridge.connectors["loopback"]
        self.alice = alice
        self.cached = cached

    async def open(self, count: int) -> list[Opened]:
        """`count` new remote rooms, each opened by its own person's first message to alice:
        she is invited to its portal and the message is there. After each, the cache holds
        at most SIZE rooms."""
        rooms = []
        for i in range(count):
            room, rita = remote_names()
            await self.loopback.emit(RemoteMessage(room=room, sender=rita,
                                                   receiver=self.alice.mxid,
                                                   message_id=f"m-{i}", text=f"first {i}"))
            portal = await self.alice.wait_for_invite()
            await message_arrives(self.alice, portal, f"first {i}")
            rooms.append((room, rita, portal))
            assert self.cached() <= SIZE
        return rooms

    async def said_again(self, opened: Opened, text: str) -> None:
        """The room's person says `text` again: it arrives in the room's portal."""
        room, rita, portal = opened
        await self.loopback.emit(RemoteMessage(room=room, sender=rita, receiver=self.alice.mxid,
                                               message_id="m-again", text=text))
        await message_arrives(self.alice, portal, text)

    async def answer_reaches_the_room(self, opened: Opened, text: str) -> None:
        """Alice says `text` in the portal: it reaches the portal's remote room, and the
        cache still holds at most SIZE rooms."""
        room, _, portal = opened
        await self.alice.send_text(portal, text)
        sent = await self.loopback.next_received()
        assert isinstance(sent, MatrixMessage)
        assert (sent.text, sent.room.remote_id) == (text, room.remote_id)
        assert self.cached() <= SIZE


async def cache_rooms(start_bridge, new_user, setting: str,
                      cached: Callable[[Bridge], int]) -> CacheRooms:
    """A bridge with `bridge.<setting>` at SIZE, whose cache `cached` counts, and alice."""
    bridge = await start_bridge(extra={"bridge": {setting: SIZE}})
    return CacheRooms(bridge, await new_user("alice"), lambda: cached(bridge))


async def test_rooms_the_portal_cache_dropped_still_relay_into_their_room(
        start_bridge, new_user):
    rooms = await cache_rooms(start_bridge, new_user, "portal_cache_size",
                              lambda bridge: bridge.router.portals.cached)
    opened = await rooms.open(3)

    oldest = opened[0]  # the least recently used: dropped from memory
    await rooms.said_again(oldest, "again in room 0")
    await rooms.answer_reaches_the_room(oldest, "answer in room 0")
    assert await rooms.bridge.storage.portals.get("loopback", oldest[0].remote_id) is not None


async def test_a_matrix_message_in_a_room_the_portal_cache_dropped_reaches_its_remote_room(
        start_bridge, new_user):
    """The Matrix side is the first to need a dropped portal again: it is read back from the
    database into the same portal, and that lookup, too, keeps the cache within its size."""
    rooms = await cache_rooms(start_bridge, new_user, "portal_cache_size",
                              lambda bridge: bridge.router.portals.cached)
    opened = await rooms.open(4)

    # Rooms 0 and 1 were dropped; each answer reads its portal back and drops another.
    for one in opened:
        await rooms.answer_reaches_the_room(one, f"answer in {one[0].remote_id}")
    for room, _, portal in opened:
        stored = await rooms.bridge.storage.portals.get("loopback", room.remote_id)
        assert stored is not None and stored.mxid == portal  # no second room was made


async def test_rooms_whose_state_was_dropped_from_memory_still_relay(start_bridge, new_user):
    """With room state for 2 rooms in memory, a third room's traffic drops the oldest: its
    members and power levels are read again, so its ghosts still post and people still get
    their invites there."""
    rooms = await cache_rooms(start_bridge, new_user, "room_state_cache_size",
                              lambda bridge: bridge.storage.state_store.cached_rooms)
    opened = await rooms.open(3)

    for one in opened:
        remote_id = one[0].remote_id
        await rooms.said_again(one, f"again {remote_id}")
        await rooms.answer_reaches_the_room(one, f"answer {remote_id}")
