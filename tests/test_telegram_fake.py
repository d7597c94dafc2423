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
