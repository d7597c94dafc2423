"""The portal cache holds at most `bridge.portal_cache_size` rows: rooms it dropped keep
relaying both ways, into the same Matrix room (real Synapse, both databases)."""

from __future__ import annotations

from bridge.networks.base import MatrixMessage, RemoteMessage

from .test_portal_cache import message_arrives, remote_names


async def test_rooms_the_portal_cache_dropped_still_relay_into_their_room(
        start_bridge, new_user):
    bridge = await start_bridge(extra={"bridge": {"portal_cache_size": 2}})
    loopback = bridge.connectors["loopback"]
    alice = await new_user("alice")
    rooms = []
    for i in range(3):
        room, rita = remote_names()
        await loopback.emit(RemoteMessage(room=room, sender=rita, receiver=alice.mxid,
                                          message_id=f"m-{i}", text=f"first {i}"))
        rooms.append((room, rita, await alice.wait_for_invite()))
    portals = bridge.router.portals
    assert portals.cached <= 2

    room, rita, portal = rooms[0]  # the least recently used: dropped from memory
    await loopback.emit(RemoteMessage(room=room, sender=rita, receiver=alice.mxid,
                                      message_id="m-again", text="again in room 0"))
    await message_arrives(alice, portal, "again in room 0")
    await alice.send_text(portal, "answer in room 0")
    sent = await loopback.next_received()
    assert isinstance(sent, MatrixMessage)
    assert (sent.text, sent.room.remote_id) == ("answer in room 0", room.remote_id)
    assert portals.cached <= 2
    assert await bridge.storage.portals.get("loopback", room.remote_id) is not None


async def test_a_matrix_message_in_a_room_the_portal_cache_dropped_reaches_its_remote_room(
        start_bridge, new_user):
    """The Matrix side is the first to need a dropped portal again: it is read back from the
    database into the same portal, and that lookup, too, keeps the cache within its size."""
    bridge = await start_bridge(extra={"bridge": {"portal_cache_size": 2}})
    loopback = bridge.connectors["loopback"]
    portals = bridge.router.portals
    alice = await new_user("alice")
    rooms = []
    for i in range(4):
        room, rita = remote_names()
        await loopback.emit(RemoteMessage(room=room, sender=rita, receiver=alice.mxid,
                                          message_id=f"m-{i}", text=f"first {i}"))
        portal = await alice.wait_for_invite()
        await message_arrives(alice, portal, f"first {i}")
        rooms.append((room, portal))
        assert portals.cached <= 2

    # Rooms 0 and 1 were dropped; each answer reads its portal back and drops another.
    for room, portal in rooms:
        await alice.send_text(portal, f"answer in {room.remote_id}")
        sent = await loopback.next_received()
        assert isinstance(sent, MatrixMessage)
        assert (sent.text, sent.room.remote_id) == (f"answer in {room.remote_id}",
                                                    room.remote_id)
        assert portals.cached <= 2
    for room, portal in rooms:
        stored = await bridge.storage.portals.get("loopback", room.remote_id)
        assert stored is not None and stored.mxid == portal  # no second room was made


async def test_rooms_whose_state_was_dropped_from_memory_still_relay(start_bridge, new_user):
    """With room state for 2 rooms in memory, a third room's traffic drops the oldest: its
    members and power levels are read again, so its ghosts still post and people still get
    their invites there."""
    bridge = await start_bridge(extra={"bridge": {"room_state_cache_size": 2}})
    loopback = bridge.connectors["loopback"]
    store = bridge.storage.state_store
    alice = await new_user("alice")
    rooms = []
    for i in range(3):
        room, rita = remote_names()
        await loopback.emit(RemoteMessage(room=room, sender=rita, receiver=alice.mxid,
                                          message_id=f"m-{i}", text=f"first {i}"))
        portal = await alice.wait_for_invite()
        await message_arrives(alice, portal, f"first {i}")
        rooms.append((room, rita, portal))
        assert store.cached_rooms <= 2

    for room, rita, portal in rooms:
        await loopback.emit(RemoteMessage(room=room, sender=rita, receiver=alice.mxid,
                                          message_id="m-again", text=f"again {room.remote_id}"))
        await message_arrives(alice, portal, f"again {room.remote_id}")
        await alice.send_text(portal, f"answer {room.remote_id}")
        sent = await loopback.next_received()
        assert isinstance(sent, MatrixMessage)
        assert (sent.text, sent.room.remote_id) == (f"answer {room.remote_id}", room.remote_id)
        assert store.cached_rooms <= 2
