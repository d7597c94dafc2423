"""End-to-bridge encryption on the real Synapse (with MSC2409/MSC3202 on): the person's client
runs its own crypto stack (vodozemac, tests/support/e2ee.py), the bridge its bot's device."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from mautrix.api import Method
from mautrix.types import RoomID

from .support.e2ee import E2eeDevice, E2eePerson, open_encrypted_dm

ENCRYPTION = {"bridge": {"encryption": {"allow": True, "default": True}}}


@pytest.fixture
async def person(homeserver) -> AsyncIterator[Callable[..., Any]]:
    made: list[E2eePerson] = []

    async def make(prefix: str = "e2ee") -> E2eePerson:
        made.append(await E2eePerson.register(homeserver.synapse, prefix))
        return made[-1]

    yield make
    for one in made:
        await one.close()


def body_has(text: str) -> Callable[[dict], bool]:
    return lambda clear: text in clear["content"].get("body", "")


async def bot_device(device: E2eeDevice, bridge) -> dict[str, dict]:
    """The bot's live device as the person's client sees it (other bridges of this test
    session made other devices for the same bot user)."""
    devices = await device.devices_of(bridge.bot.mxid)
    return {bridge.encryption.device_id: devices[bridge.encryption.device_id]}


async def say(device: E2eeDevice, room: RoomID, bridge, text: str) -> str:
    """What a client does: make sure the bot's device has this session's key, then send."""
    await device.share_room_key(room, bridge.bot.mxid, await bot_device(device, bridge))
    return await device.send_text(room, text)


async def delivered_live(device: E2eeDevice, bridge, room: RoomID) -> None:
    """Until the homeserver hands the bridge what happens as it happens again. After the
    bridge was down, Synapse first retries the transactions that failed meanwhile, and what is
    sent to a device during those retries never reaches the bridge (a failed transaction is
    kept as its event ids only): a room key shared then is lost. Seen in this test's Synapse
    log ("Retrying transaction ... Successfully recovered"); it is the homeserver's, not what
    this test is about. The person's new display name reaching the bridge's member state is
    the sign: it comes after every retried transaction."""
    name = f"Alice {secrets.token_hex(3)}"
    await device.client.set_displayname(name)
    deadline = time.monotonic() + 60
    while True:
        member = await bridge.storage.state_store.get_member(room, device.mxid)
        if member is not None and member.displayname == name:
            return
        assert time.monotonic() < deadline, "the bridge never saw the new display name"
        await asyncio.sleep(0.05)


async def encrypted_management_room(device: E2eeDevice, bridge) -> RoomID:
    room = await open_encrypted_dm(device, bridge.bot.mxid)
    await device.wait_for_clear(room, bridge.bot.mxid, body_has("management room"),
                                "the bot's encrypted welcome")
    return room


async def test_encrypted_management_room_help_and_a_redacted_password(
        start_bridge, person, xmpp_peer, prosody):
    bridge = await start_bridge(extra={**ENCRYPTION, "networks": {"xmpp": {
        "enabled": True, "ca_file": str(prosody.ca), "nameserver": prosody.nameserver}}})
    alice = await person("alice")
    phone = await alice.new_device()
    room = await encrypted_management_room(phone, bridge)
    bot = bridge.bot.mxid

    await say(phone, room, bridge, "help")
    await phone.wait_for_clear(room, bot, body_has("link"), "the encrypted help")
    # Nothing the bot said there was in the clear.
    plain = [e for e in phone.timeline[room]
             if e["sender"] == bot and e["type"] == "m.room.message"]
    assert plain == []

    account = await xmpp_peer("alice")
    await account.stop()
    await say(phone, room, bridge, f"link xmpp {account.jid} --profile Jobb")
    await phone.wait_for_clear(room, bot, body_has("Send it as your next message"), "the ask")
    secret = await say(phone, room, bridge, account.password)
    await phone.wait_for_clear(room, bot, body_has("Reply yes to link"), "the consent")
    redacted = await phone.client.get_event(room, secret)
    assert redacted.content.serialize() == {}  # the encrypted password is gone at once


async def link_xmpp_encrypted(device: E2eeDevice, bridge, account) -> RoomID:
    room = await encrypted_management_room(device, bridge)
    bot = bridge.bot.mxid
    await say(device, room, bridge, f"link xmpp {account.jid} --profile Jobb")
    await device.wait_for_clear(room, bot, body_has("Send it as your next message"), "the ask")
    await say(device, room, bridge, account.password)
    await device.wait_for_clear(room, bot, body_has("Reply yes to link"), "the consent")
    await say(device, room, bridge, "yes")
    await device.wait_for_clear(room, bot, body_has(f"Linked xmpp:{account.jid}"), "the link")
    return room


async def test_encrypted_xmpp_portal_both_ways_new_devices_and_key_requests(
        start_bridge, person, xmpp_peer, prosody):
    bridge = await start_bridge(extra={**ENCRYPTION, "networks": {"xmpp": {
        "enabled": True, "ca_file": str(prosody.ca), "nameserver": prosody.nameserver}}})
    alice = await person("alice")
    phone = await alice.new_device()
    alice_xmpp, bob = await xmpp_peer("alice"), await xmpp_peer("bob")
    await alice_xmpp.stop()
    await link_xmpp_encrypted(phone, bridge, alice_xmpp)

    # XMPP -> Matrix: a new portal, encrypted from the start; the ghost's message is
    # encrypted with the bot's device and readable on the person's device.
    bob.send(alice_xmpp.jid, "hi alice, encrypted", kind="chat")
    portal = await phone.wait_for_room(body_has("hi alice, encrypted"), "bob's chat")
    encryption = await phone.client.get_state_event(portal, "m.room.encryption")
    assert encryption["algorithm"] == "m.megolm.v1.aes-sha2"
    [first] = [e for e in phone.timeline[portal] if e["type"] == "m.room.encrypted"]
    assert first["content"]["sender_key"] == bridge.encryption.identity_key
    assert not [e for e in phone.timeline[portal] if e["type"] == "m.room.message"]

    # Matrix -> XMPP: the person's encrypted answer reaches bob in the clear.
    await say(phone, portal, bridge, "hi bob, encrypted")
    got = await bob.wait_for(lambda m: m["body"] == "hi bob, encrypted", "alice's answer")
    assert got["from"].bare == alice_xmpp.jid

    # A new device of the person: what is sent after it appeared is shared with it, and it
    # may ask the bot for the key of what came before.
    tablet = await alice.new_device()
    bob.send(alice_xmpp.jid, "for both devices", kind="chat")
    await tablet.wait_for_clear(portal, first["sender"], body_has("for both devices"),
                                "the next message on the new device")
    await phone.wait_for_clear(portal, first["sender"], body_has("for both devices"),
                               "the next message on the first device")
    await tablet.wait(lambda: first["event_id"] in {
        e["event_id"] for e in tablet.timeline.get(portal, [])} or None, "the old event")
    assert tablet.decrypt(first) is None
    await tablet.request_key(bridge.bot.mxid, bridge.encryption.device_id, portal, first)
    await tablet.wait(lambda: tablet.decrypt(first), "the old message's key")
    assert body_has("hi alice, encrypted")(tablet.decrypt(first))

    # Someone who is not in the room asks for that key: refused, with the reason.
    carol = await person("carol")
    stranger = await carol.new_device()
    await stranger.request_key(bridge.bot.mxid, bridge.encryption.device_id, portal, first)
    withheld = await stranger.wait(lambda: [e for e in stranger.to_device
                                            if e["type"] == "m.room_key.withheld"],
                                   "the refusal")
    assert withheld[0]["content"]["code"] == "m.unauthorised"
    assert withheld[0]["content"]["session_id"] == first["content"]["session_id"]
    assert stranger.decrypt(first) is None


async def test_restart_keeps_the_device_lost_keys_late_and_missing_keys(
        start_bridge, person, homeserver):
    bridge = await start_bridge(extra=ENCRYPTION)
    alice = await person("alice")
    phone = await alice.new_device()
    room = await encrypted_management_room(phone, bridge)
    bot = bridge.bot.mxid
    device_id, identity = bridge.encryption.device_id, bridge.encryption.identity_key
    devices_before = set(await phone.devices_of(bot))
    await delivered_live(phone, bridge, room)

    # Written while the bridge is down, with a session whose key it got before: read after
    # it is back (its sessions are in its database), with the same device.
    live_device = await bot_device(phone, bridge)
    await phone.share_room_key(room, bot, live_device)
    await phone.wait(lambda: [e for e in phone.to_device if e["type"] == "m.room_key"]
                     or True)  # one sync round
    await say(phone, room, bridge, "help")
    await phone.wait_for_clear(room, bot, body_has("link"), "the first help")
    await bridge.stop()
    mark = phone.mark(room)
    await phone.send_text(room, "whoami")
    bridge = await start_bridge(extra=ENCRYPTION)
    assert (bridge.encryption.device_id, bridge.encryption.identity_key) == (device_id,
                                                                           identity)
    await phone.wait_for_clear(room, bot, body_has(alice.mxid), "the answer given meanwhile",
                               after=mark)
    assert set(await phone.devices_of(bot)) == devices_before  # no second device

    # The homeserver lost the device and its keys: the same identity is published again.
    await bridge.stop()
    admin = await person("admin")
    await asyncio.to_thread(homeserver.synapse.register_user, admin.username + "x",
                            "pw-" + admin.password, True)
    admin_device = await E2eeDevice.login(homeserver.synapse, admin.username + "x",
                                          "pw-" + admin.password)
    await admin_device.client.api.request(
        Method.DELETE, f"/_synapse/admin/v2/users/{bot}/devices/{device_id}")
    await admin_device.close()
    assert device_id not in await phone.devices_of(bot)
    bridge = await start_bridge(extra=ENCRYPTION)
    published = (await phone.devices_of(bot))[device_id]
    assert published["keys"][f"curve25519:{device_id}"] == identity
    await delivered_live(phone, bridge, room)
    mark = phone.mark(room)
    await say(phone, room, bridge, "help")
    await phone.wait_for_clear(room, bot, body_has("link"), "help after the keys were lost",
                               after=mark)

    # A late key: the bot asks the sender's device for it, gets it, and answers.
    live_device = await bot_device(phone, bridge)

    async def share_when_asked(request: dict) -> None:
        await phone.share_room_key(room, bot, live_device)

    phone.on_key_request = share_when_asked
    phone.new_session(room)
    mark = phone.mark(room)
    await phone.send_text(room, "whoami")
    await phone.wait_for_clear(room, bot, body_has(alice.mxid), "the answer to a late key",
                               after=mark)
    assert [e for e in phone.to_device if e["type"] == "m.room_key_request"
            and e["sender"] == bot]

    # A missing key (the sender's device refuses): the person is told, not ignored.
    async def refuse(request: dict) -> None:
        body = request["content"]["body"]
        await phone.send_to_device("m.room_key.withheld", bot, bridge.encryption.device_id, {
            "algorithm": body["algorithm"], "room_id": body["room_id"],
            "session_id": body["session_id"], "sender_key": body["sender_key"],
            "code": "m.unavailable", "reason": "not shared"})

    phone.on_key_request = refuse
    phone.new_session(room)
    lost = await phone.send_text(room, "help")
    notice = await phone.wait_for_clear(room, bot, body_has("never reached the bridge"),
                                        "the missing-key notice")
    assert notice["content"]["m.relates_to"]["m.in_reply_to"]["event_id"] == lost
    assert device_id in notice["content"]["body"]


async def test_encryption_off_an_encrypted_room_gets_one_plain_notice(start_bridge, person):
    bridge = await start_bridge(extra={"bridge": {"encryption": {"allow": False}}})
    assert bridge.encryption is None
    alice = await person("alice")
    phone = await alice.new_device()
    room = await open_encrypted_dm(phone, bridge.bot.mxid)
    await phone.wait(lambda: [e for e in phone.timeline.get(room, [])
                              if e["type"] == "m.room.message"], "the plain welcome")
    await phone.send_text(room, "help")

    def notices() -> list[dict]:
        return [e for e in phone.timeline.get(room, []) if e["type"] == "m.room.message"
                and "cannot read encrypted messages" in e["content"].get("body", "")]

    await phone.wait(notices, "the plain notice")
    assert not phone.encrypted_events(room, bridge.bot.mxid)
