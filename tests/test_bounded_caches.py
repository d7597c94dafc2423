"""The portal cache holds at most `bridge.portal_cache_size` rows, and the Matrix room-state
copy at most `bridge.room_state_cache_size` rooms: rooms they dropped keep relaying both
ways, into the same Matrix room (real Synapse, both databases)."""

from __future__ import annotations

from collections.abc import Callable

from mautrix.types import RoomID

from bridge.networks.base import MatrixMessage, RemoteMessage, RemoteRoom, RemoteUser

from .support.matrix import MatrixUser
from .test_portal_cache import message_arrives, remote_names

SIZE = 2  # rooms each cache keeps in these tests

Opened = tuple[RemoteRoom, RemoteUser, RoomID]  # remote room, its person, its portal


async def open_rooms(loopback, alice: MatrixUser, count: int,
                     cached: Callable[[], int]) -> list[Opened]:
    """`count` new remote rooms, each opened by its own person's first message to alice:
    she is invited to its portal and the message is there. After each, the cache that
    `cached` counts holds at most SIZE rooms."""
    rooms = []
    for i in range(count):
        room, rita = remote_names()
        await loopback.emit(RemoteMessage(room=room, sender=rita, receiver=alice.mxid,
                                          message_id=f"m-{i}", text=f"first {i}"))
        portal = await alice.wait_for_invite()
        await message_arrives(alice, portal, f"first {i}")
        rooms.append((room, rita, portal))
        assert cached() <= SIZE
    return rooms


async def said_again(loopback, alice: MatrixUser, opened: Opened, text: str) -> None:
    """The room's person says `text` again: it arrives in the room's portal."""
    room, rita, portal = opened
    await loopback.emit(RemoteMessage(room=room, sender=rita, receiver=alice.mxid,
                                      message_id="m-again", text=text))
    await message_arrives(alice, portal, text)


async def answer_reaches_the_room(loopback, alice: MatrixUser, opened: Opened, text: str,
                                  cached: Callable[[], int]) -> None:
    """Alice says `text` in the portal: it reaches the portal's remote room, and the cache
    that `cached` counts still holds at most SIZE rooms."""
    room, _, portal = opened
    await alice.send_text(portal, text)
    sent = await loopback.next_received()
    assert isinstance(sent, MatrixMessage)
    assert (sent.text, sent.room.remote_id) == (text, room.remote_id)
    assert cached() <= SIZE


async def test_rooms_the_portal_cache_dropped_still_relay_into_their_room(
        start_bridge, new_user):
    bridge = await start_bridge(extra={"bridge": {"portal_cache_size": SIZE}})
    loopback = bridge.connectors["loopback"]
    portals = bridge.router.portals
    alice = await new_user("alice")
    rooms = await open_rooms(loopback, alice, 3, lambda: portals.cached)

    oldest = rooms[0]  # the least recently used: dropped from memory
    await said_again(loopback, alice, oldest, "again in room 0")
    await answer_reaches_the_room(loopback, alice, oldest, "answer in room 0",
                                  lambda: portals.cached)
    assert await bridge.storage.portals.get("loopback", oldest[0].remote_id) is not None


async def test_a_matrix_message_in_a_room_the_portal_cache_dropped_reaches_its_remote_room(
        start_bridge, new_user):
    """The Matrix side is the first to need a dropped portal again: it is read back from the
    database into the same portal, and that lookup, too, keeps the cache within its size."""
    bridge = await start_bridge(extra={"bridge": {"portal_cache_size": SIZE}})
    loopback = bridge.connectors["loopback"]
    portals = bridge.router.portals
    alice = await new_user("alice")
    rooms = await open_rooms(loopback, alice, 4, lambda: portals.cached)

    # Rooms 0 and 1 were dropped; each answer reads its portal back and drops another.
    for opened in rooms:
        await answer_reaches_the_room(loopback, alice, opened, f"answer in {opened[0].remote_id}",
                                      lambda: portals.cached)
    for room, _, portal in rooms:
        stored = await bridge.storage.portals.get("loopback", room.remote_id)
        assert stored is not None and stored.mxid == portal  # no second room was made


async def test_rooms_whose_state_was_dropped_from_memory_still_relay(start_bridge, new_user):
    """With room state for 2 rooms in memory, a third room's traffic drops the oldest: its
    members and power levels are read again, so its ghosts still post and people still get
    their invites there."""
    bridge = await start_bridge(extra={"bridge": {"room_state_cache_size": SIZE}})
    loopback = bridge.connectors["loopback"]
    store = bridge.storage.state_store
    alice = await new_user("alice")
    rooms = await open_rooms(loopback, alice, 3, lambda: store.cached_rooms)

    for opened in rooms:
        remote_id = opened[0].remote_id
        await said_again(loopback, alice, opened, f"again {remote_id}")
        await answer_reaches_the_room(loopback, alice, opened, f"answer {remote_id}",
                                      lambda: store.cached_rooms)
