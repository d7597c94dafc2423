"""The Telegram fake against the unmodified Telethon: the real auth-key exchange with the
fake's own RSA key, logins (QR, phone code, SRP 2FA), messages both ways, catching up."""

from __future__ import annotations

import asyncio

import pytest
from telethon import TelegramClient, errors, events
from telethon.crypto import rsa
from telethon.sessions import StringSession

from tests.fakes.telegram import API_HASH, API_ID, FakeTelegram, TelegramThread


@pytest.fixture(scope="module")
def server():
    thread = TelegramThread()
    rsa.add_key(thread.start().public_key, old=False)
    yield thread
    thread.stop()


@pytest.fixture
def telegram(server):
    return server.fake


def client_for(fake: FakeTelegram, session: str = "") -> TelegramClient:
    client = TelegramClient(StringSession(session), API_ID, API_HASH, receive_updates=True)
    client.session.set_dc(fake.dc_id, fake.host, fake.port)
    return client


async def test_auth_key_exchange_and_unauthorised(telegram):
    client = client_for(telegram)
    await client.connect()
    try:
        assert client.session.auth_key is not None
        assert client.session.auth_key.key_id in telegram.auth_keys
        assert not await client.is_user_authorized()
    finally:
        await client.disconnect()


async def test_phone_code_and_2fa(telegram):
    alice = telegram.add_person("Alice", password="correct horse")
    client = client_for(telegram)
    await client.connect()
    try:
        sent = await client.send_code_request("+" + alice.phone)
        with pytest.raises(errors.PhoneCodeInvalidError):
            await client.sign_in("+" + alice.phone, "00000", phone_code_hash=sent.phone_code_hash)
        with pytest.raises(errors.SessionPasswordNeededError):
            await client.sign_in("+" + alice.phone, telegram.code_for(alice),
                                 phone_code_hash=sent.phone_code_hash)
        with pytest.raises(errors.PasswordHashInvalidError):
            await client.sign_in(password="wrong")
        await client.sign_in(password="correct horse")
        me = await client.get_me()
        assert me.id == alice.id
    finally:
        await client.disconnect()


async def test_qr_login_and_messages_both_ways(telegram, server):
    bob = telegram.add_person("Bob")
    carol = telegram.add_person("Carol")
    client = client_for(telegram)
    await client.connect()
    try:
        qr = await client.qr_login()
        assert qr.url.startswith("tg://login?token=")
        waiting = asyncio.create_task(qr.wait(10))
        await asyncio.sleep(0.1)
        await server.run(telegram.accept_qr(qr.token, bob))
        user = await waiting
        assert user.id == bob.id
        got: asyncio.Queue = asyncio.Queue()
        client.add_event_handler(lambda e: got.put_nowait(e), events.NewMessage(incoming=True))
        await client.get_dialogs()
        await server.run(telegram.send_as(carol, bob, "hello bob"))
        event = await asyncio.wait_for(got.get(), 10)
        assert event.raw_text == "hello bob" and event.sender_id == carol.id
        sent = await client.send_message(carol.id, "<b>hi</b> carol", parse_mode="html")
        [copy] = [m for m in carol.messages.values() if m.message == "hi carol"]
        assert copy.entities and copy.from_id.user_id == bob.id
        assert sent.id in bob.messages
        # Dropped connection: what was said meanwhile arrives once back (getDifference).
        session = StringSession.save(client.session)
        await server.call(telegram.drop_connections, bob.id)
        await asyncio.sleep(0.2)
        await server.run(telegram.send_as(carol, bob, "while you were away"))
        event = await asyncio.wait_for(got.get(), 30)
        assert event.raw_text == "while you were away"
        assert session
    finally:
        await client.disconnect()


async def test_history_pages_as_telegram_does(telegram, server):
    from datetime import UTC, datetime, timedelta

    alice = telegram.add_person("Alice")
    bob = telegram.add_person("Bob")
    group = telegram.add_group("Old friends", [alice, bob], channel=True)
    start = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    for i in range(130):
        await server.run(telegram.send_as(bob if i % 2 else alice, group, f"old {i}",
                                          date=start + timedelta(minutes=i)))
    await server.run(telegram.send_as(bob, alice, "private 0", date=start))
    await server.run(telegram.send_as(alice, bob, "private 1"))
    await server.run(telegram.edit_as(bob, group, 4, "old 3, edited"))
    await server.run(telegram.react_as(bob, group, 6, "👍"))
    await server.run(telegram.react_as(alice, group, 6, "🔥"))
    client = client_for(telegram)
    await client.connect()
    try:
        qr = await client.qr_login()
        waiting = asyncio.create_task(qr.wait(10))
        await asyncio.sleep(0.1)
        await server.run(telegram.accept_qr(qr.token, alice))
        await waiting
        await client.get_dialogs()
        # The newest 120, newest first, in two getHistory pages (a channel's answer says
        # how many there are, so Telethon asks again).
        newest = [m async for m in client.iter_messages(-1000000000000 - group.id, limit=120)]
        assert [m.message for m in newest] == [f"old {i}" for i in range(129, 9, -1)]
        assert newest[0].date == start + timedelta(minutes=129)
        # Forwards from a message (min_id): the oldest ones after it, oldest first.
        after = [m async for m in client.iter_messages(-1000000000000 - group.id,
                                                       min_id=2, limit=105, reverse=True)]
        assert [m.id for m in after] == list(range(3, 108))
        assert after[1].message == "old 3, edited" and after[1].edit_date is not None
        assert after[1].sender_id == bob.id
        reacted = next(m for m in after if m.id == 6)
        assert sorted((r.peer_id.user_id, r.reaction.emoticon)
                      for r in reacted.reactions.recent_reactions) == sorted(
            [(bob.id, "👍"), (alice.id, "🔥")])
        # Older than a date (offset_date), and messages by id (channel and private).
        before = [m async for m in client.iter_messages(
            -1000000000000 - group.id, offset_date=start + timedelta(minutes=3), limit=2)]
        assert [m.message for m in before] == ["old 2", "old 1"]
        [one] = await client.get_messages(-1000000000000 - group.id, ids=[50])
        assert one.message == "old 49"
        mine = [m async for m in client.iter_messages(bob.id, limit=10)]
        assert [m.message for m in mine] == ["private 1", "private 0"]
        [again] = await client.get_messages(bob.id, ids=[mine[0].id])
        assert again.message == "private 1"
        # A flood wait on getHistory is Telethon's FloodWaitError (no sleeping here).
        client.flood_sleep_threshold = 0
        await server.call(telegram.flood, "messages.GetHistory", 7)
        with pytest.raises(errors.FloodWaitError) as flood:
            [m async for m in client.iter_messages(bob.id, limit=1)]
        assert flood.value.seconds == 7
    finally:
        await client.disconnect()
