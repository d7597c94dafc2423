"""Encrypted events the bridge cannot read are answered, once per room, not dropped in silence:
real Synapse, and a restart in between."""

from __future__ import annotations

import asyncio
import secrets
import time

from mautrix.types import EventType

from bridge.networks.base import RemoteMessage, RemoteRoom, RemoteUser

from .support.matrix import DEADLINE

CANNOT_READ = "cannot read encrypted messages yet: what is sent encrypted here"
TURNED_ON = "Encryption was turned on in this room"
BOT_CANNOT_READ = "I cannot read encrypted messages yet, so I cannot see your commands"


def megolm() -> dict:
    """An encrypted message as a client sends it (the bridge only sees its envelope)."""
    return {"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": secrets.token_urlsafe(32),
            "sender_key": secrets.token_urlsafe(32), "device_id": "TESTDEVICE",
            "session_id": secrets.token_urlsafe(32)}


async def count(user, room, contains: str, sender) -> int:
    return sum(contains in body for body in await user.notices_from(room, sender))


async def wait_for_count(user, room, contains: str, sender, wanted: int) -> None:
    """Wait until the bot has said `contains` `wanted` times (later answers, not the first)."""
    deadline = time.monotonic() + DEADLINE
    while await count(user, room, contains, sender) < wanted:
        if time.monotonic() > deadline:
            raise AssertionError(f"never saw {contains!r} {wanted} times in {room}")
        await asyncio.sleep(0.1)


async def test_encrypted_events_are_answered_once_per_room(start_bridge, new_user,
                                                           homeserver):
    bot_mxid = homeserver.bot_mxid
    bridge = await start_bridge()
    alice = await new_user("alice")
    tag = secrets.token_hex(3)
    await bridge.connectors["loopback"].emit(RemoteMessage(
        room=RemoteRoom(f"enc-{tag}", name=f"Encrypted {tag}"),
        sender=RemoteUser(f"rita{tag}", display_name="Rita"), receiver=alice.mxid,
        message_id="r-1", text="hello"))
    portal = await alice.wait_for_invite()
    management = await alice.open_management_room(bot_mxid)
    levels = await bridge.bot.intent.get_power_levels(portal)
    levels.users[alice.mxid] = 100  # so alice may turn encryption on
    await bridge.bot.intent.set_power_levels(portal, levels)

    first = await alice.client.send_message_event(portal, EventType.ROOM_ENCRYPTED, megolm())
    notice = await alice.wait_for_event(
        portal, lambda e: e.type == EventType.ROOM_MESSAGE and e.sender == bot_mxid
        and CANNOT_READ in e.content.body, "the notice")
    assert notice.content.get_reply_to() == first and "loopback" in notice.content.body
    await alice.client.send_message_event(portal, EventType.ROOM_ENCRYPTED, megolm())
    await alice.client.send_state_event(portal, EventType.ROOM_ENCRYPTION,
                                        {"algorithm": "m.megolm.v1.aes-sha2"})
    # Handled in order: once encryption's notice is there, the second message was seen.
    await wait_for_count(alice, portal, TURNED_ON, bot_mxid, 1)
    assert await count(alice, portal, CANNOT_READ, bot_mxid) == 1

    await alice.client.send_message_event(management, EventType.ROOM_ENCRYPTED, megolm())
    await wait_for_count(alice, management, BOT_CANNOT_READ, bot_mxid, 1)
    await alice.client.send_message_event(management, EventType.ROOM_ENCRYPTED, megolm())
    await alice.send_text(management, "whoami")
    await wait_for_count(alice, management, "You are", bot_mxid, 1)
    assert await count(alice, management, BOT_CANNOT_READ, bot_mxid) == 1

    # After a restart the rooms are still known to have been told.
    await bridge.stop()
    await start_bridge()
    await alice.client.send_message_event(portal, EventType.ROOM_ENCRYPTED, megolm())
    await alice.client.send_message_event(management, EventType.ROOM_ENCRYPTED, megolm())
    await alice.client.send_state_event(portal, EventType.ROOM_ENCRYPTION, {
        "algorithm": "m.megolm.v1.aes-sha2", "rotation_period_ms": 3_600_000})
    await alice.send_text(management, "whoami")
    await wait_for_count(alice, portal, TURNED_ON, bot_mxid, 2)
    await wait_for_count(alice, management, "You are", bot_mxid, 2)
    assert await count(alice, portal, CANNOT_READ, bot_mxid) == 1
    assert await count(alice, management, BOT_CANNOT_READ, bot_mxid) == 1
