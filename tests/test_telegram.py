"""Telegram end to end: the unmodified Telethon inside the bridge talks MTProto 2.0 to the
wire-level fake (tests/fakes/telegram); Matrix is the real Synapse. Linking by QR code and by
phone code + cloud password, and messages both ways as the person."""

from __future__ import annotations

import logging

import pytest
from mautrix.types import EventType, Format, MessageType, TextMessageEventContent
from telethon.tl import types

from tests.fakes.telegram import TelegramThread

from .support.telegram import link_by_qr, qr_token, telegram_settings


@pytest.fixture(scope="module")
def server():
    thread = TelegramThread()
    thread.start()
    yield thread
    thread.stop()


@pytest.fixture
def fake(server):
    return server.fake


@pytest.fixture
async def telegram_bridge(start_bridge, server, tmp_path):
    return await start_bridge(extra={"networks": {"telegram": telegram_settings(
        server, tmp_path / "telegram.pub")}})


def body_is(text: str):
    return lambda e: e.type == EventType.ROOM_MESSAGE and e.content.body == text


async def test_phone_code_and_cloud_password(telegram_bridge, server, fake, new_user,
                                             homeserver, caplog):
    caplog.set_level(logging.DEBUG)
    bridge = telegram_bridge
    person = fake.add_person("Alice", password="tr0ub4dor")
    alice = await new_user("alice")
    bot = homeserver.bot_mxid
    room = await alice.open_management_room(bot)

    await alice.send_text(room, "link telegram +4700000000")
    assert "no account with the number" in await alice.wait_for_notice(room, bot, "Nothing")

    await alice.send_text(room, f"link telegram +{person.phone}")
    await alice.wait_for_notice(room, bot, "Send the code")
    wrong = await alice.send_text(room, "11111")
    await alice.wait_for_notice(room, bot, "not the one Telegram sent")
    code = fake.code_for(person)
    await alice.send_text(room, code)
    await alice.wait_for_notice(room, bot, "send its cloud password")
    bad = await alice.send_text(room, "not-the-password")
    await alice.wait_for_notice(room, bot, "refused that cloud password")
    right = await alice.send_text(room, "tr0ub4dor")
    consent = await alice.wait_for_notice(room, bot, "Reply yes to link")
    assert f"Telegram user {person.id}" in consent and "dialog(s)" in consent
    for secret in (wrong, bad, right):  # each secret reply was redacted at once
        assert not (await alice.client.get_event(room, secret)).content.serialize().get("body")
    [check] = fake.calls_of("auth.CheckPassword")[-1:]
    assert check.error is None  # the SRP proof was checked by the fake, and held
    assert [c.error for c in fake.calls_of("auth.CheckPassword")] == [
        "PASSWORD_HASH_INVALID", None]
    # Nothing is stored before consent but the sealed pending credential.
    account = await bridge.accounts.for_matrix_user(alice.mxid)
    assert (await bridge.accounts.view(account.id)).profiles[0].personas == []
    await alice.send_text(room, "yes")
    await alice.wait_for_notice(room, bot, f"Linked telegram:{person.id}")
    [persona] = (await bridge.accounts.view(account.id)).profiles[0].personas
    session = await bridge.security.vault.open_text(*persona.vault_ref, "session")
    assert session
    # The session string (auth key) is nowhere in the database in plaintext, nor in the log.
    for table in ("vault_secret", "persona", "one_time_secret", "audit_log"):
        rows = await bridge.storage.db.fetch(f"SELECT * FROM {table}")
        assert all(session not in str(value) for row in rows for value in tuple(row)), table
    bridge_log = "\n".join(r.getMessage() for r in caplog.records if r.name != "mau.http")
    for secret in (session, "tr0ub4dor", code):
        assert secret not in bridge_log

    # An expired code is a clear message and stores nothing.
    await alice.send_text(room, f"link telegram +{person.phone}")
    await alice.wait_for_notice(room, bot, "Send the code")
    await server.call(fake.expire_codes)
    await alice.send_text(room, fake.code_for(person))
    assert "expired" in await alice.wait_for_notice(room, bot, "Nothing was stored")
    # So is a flood wait.
    await server.call(fake.flood, "auth.SendCode", 300)
    await alice.send_text(room, f"link telegram +{person.phone}")
    assert "wait 5 min 0 s" in await alice.wait_for_notice(room, bot, "Nothing was stored")


async def test_qr_login_and_private_chat_both_ways(telegram_bridge, server, fake, new_user,
                                                   homeserver):
    person = fake.add_person("Alice", username=None)
    bob = fake.add_person("Bob", username="bob")
    alice = await new_user("alice")
    bot = homeserver.bot_mxid
    room = await alice.open_management_room(bot)

    # An expired QR code is replaced by a new one; one not scanned yet is said so.
    fake.qr_seconds = 1
    await alice.send_text(room, "link telegram")
    first = qr_token(await alice.wait_for_notice(room, bot, "Scan this QR code"))
    fake.qr_seconds = 30
    await alice.send_text(room, "done")
    prompt = await alice.wait_for_notice(room, bot, "The QR code expired; scan this new one")
    assert qr_token(prompt) != first
    await alice.send_text(room, "done")
    await alice.wait_for_notice(room, bot, "not scanned yet")
    done = await link_by_qr(alice, bot, room, server, person, command=None, prompt=prompt)
    assert "signed in as Alice" in done

    # Telegram -> Matrix: a private chat gets its room on the first message.
    await server.run(fake.send_as(bob, person, "hello alice", entities=[
        types.MessageEntityBold(0, 5), types.MessageEntitySpoiler(6, 5)]))
    portal = await alice.wait_for_invite()
    hello = await alice.wait_for_event(portal, body_is("hello alice"), "bob's message")
    assert hello.content.formatted_body == (
        "<strong>hello</strong> <span data-mx-spoiler>alice</span>")
    member = await alice.client.get_state_event(portal, EventType.ROOM_MEMBER, hello.sender)
    assert member.displayname.startswith("Bob")

    # Matrix -> Telegram, as alice herself, with formatting.
    content = TextMessageEventContent(msgtype=MessageType.TEXT, body="hi bob",
                                      format=Format.HTML,
                                      formatted_body="<em>hi</em> <code>bob</code>")
    await alice.client.send_message(portal, content)
    got = await _wait(server, lambda: [m for m in bob.messages.values()
                                       if m.message == "hi bob"])
    [message] = got
    assert message.from_id == types.PeerUser(person.id)
    assert [type(e).__name__ for e in message.entities] == ["MessageEntityItalic",
                                                            "MessageEntityCode"]
    # What the bridge sent does not come back into Matrix.
    bodies = [e.content.body for e in await alice.room_events(portal)
              if e.type == EventType.ROOM_MESSAGE]
    assert bodies.count("hi bob") == 1


async def _wait(server, found, what: str = "it"):
    import asyncio

    for _ in range(300):
        value = await server.call(found)
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"the fake never saw {what}")
