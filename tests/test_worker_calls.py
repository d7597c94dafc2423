"""Work only one bridge worker can do, asked of any: `map` joins the room on the worker serving
the network, a Telegram login's steps reach the worker holding the login, calls between
workers open only where and as they were sealed, and an XMPP room's refusal is reported
wherever the message was sent from."""

from __future__ import annotations

import asyncio
import base64
import re
import secrets
from pathlib import Path

import pytest
from mautrix.types import EventType, MessageType
from mautrix.util.async_db import Database
from slixmpp import JID

from bridge.core.worker_calls import CallSeal
from tests.fakes.telegram import TelegramThread

from .support.api import PREFIX, Api
from .support.matrix import DEADLINE
from .support.telegram import qr_token, telegram_settings
from .test_workers import Workers, postgres_uri
from .test_xmpp import MUC, body_is, link_xmpp

__all__ = ["postgres_uri"]  # the fixture, used here


def xmpp_on(prosody) -> dict:
    return {"networks": {"xmpp": {"enabled": True, "ca_file": str(prosody.ca),
                                  "nameserver": prosody.nameserver}}}


async def logged(path: Path, text: str) -> str:
    """A worker's log once `text` is in it (what an admin reads)."""
    async with asyncio.timeout(DEADLINE):
        for _ in range(1_000_000):  # a file has no event to wait on
            if text in (found := path.read_text(errors="replace")):
                return found
            await asyncio.sleep(0.2)
    raise AssertionError(f"{text!r} never appeared in {path}")


SECRET = secrets.token_urlsafe(32)


async def test_map_said_to_a_worker_without_the_session_maps_there(
        homeserver, postgres_uri, tmp_path, new_user, prosody, xmpp_peer):
    """A person cannot choose the worker: `map` through the bot and a rule added through the
    API reach the worker that has no XMPP session, and the room is mapped all the same (joined
    by the worker serving XMPP). That worker's start-up does not call XMPP's rules "not
    active" either: they are not its to judge."""
    workers = Workers(homeserver, postgres_uri, tmp_path, None, extra={
        **xmpp_on(prosody), "provisioning": {"shared_secret": SECRET}})
    api = Api(f"http://127.0.0.1:{workers.ports[1]}")  # the second worker's own address
    try:
        await workers.start("w1")
        alice = await new_user("alice")
        alice_xmpp, bob = await xmpp_peer("alice"), await xmpp_peer("bob")
        await alice_xmpp.stop()  # only its credentials are needed
        bot = homeserver.bot_mxid
        first, second, third = (f"{name}{bob.nick}@{MUC}" for name in ("one", "two", "three"))
        for muc in (first, second, third):
            await bob.join(muc)
        room = await link_xmpp(alice, alice_xmpp, homeserver)
        await alice.send_text(room, f"map xmpp {first} --profile Jobb")
        await alice.wait_for_notice(room, bot, f"Mapped xmpp {first} into Jobb")
        await alice.wait_for_invite()
        await workers.start("w2")  # w1 serves XMPP: alice's session is open there
        assert (await workers.owners("network:"))["xmpp"] == "w1"

        workers.pin("w2")
        await alice.send_text(room, f"map xmpp {second} --profile Jobb")
        mapped = await alice.wait_for_notice(room, bot, second)
        assert f"Mapped xmpp {second} into Jobb" in mapped, mapped
        # Its start-up left XMPP's rules to w1, without a word of them being "not active".
        started = await logged(workers.processes["w2"].log, "Mapped rooms rejoined")
        assert not re.search(r"Rule \S+ not active", started), started
        assert "rules on xmpp are left to the worker serving that network" in started
        portal = await alice.wait_for_invite()
        bob.send(second, "hello over two")
        await alice.wait_for_event(portal, body_is("hello over two"), "bob's message")
        await alice.send_text(portal, "hi bob")
        await bob.wait_for(lambda m: m["body"] == "hi bob", "alice's message")

        # The API's rules, on the worker without the session, likewise.
        status, body = await api.call("POST", f"{PREFIX}/rules", token=SECRET,
                                      query={"user_id": alice.mxid},
                                      body={"network": "xmpp", "remote": third})
        assert status == 201, body
        assert body["remote"] == third
        portal = await alice.wait_for_invite()
        bob.send(third, "hello over three")
        await alice.wait_for_event(portal, body_is("hello over three"), "bob's message")
        # The same checks as on the serving worker: a room mapped already is refused.
        status, body = await api.call("POST", f"{PREFIX}/rules", token=SECRET,
                                      query={"user_id": alice.mxid},
                                      body={"network": "xmpp", "remote": third})
        assert status == 400 and "already mapped" in body["error"], body
        await alice.send_text(room, "rules")
        listed = await alice.wait_for_notice(room, bot, third)
        assert all(muc in listed for muc in (first, second, third)), listed
    finally:
        await api.http.close()
        await workers.stop()


@pytest.fixture(scope="module")
def telegram():
    thread = TelegramThread()
    thread.start()
    yield thread
    thread.stop()


async def test_a_telegram_login_finishes_whichever_worker_gets_each_step(
        homeserver, postgres_uri, tmp_path, new_user, telegram):
    """Telegram's half-done login (a connected client with its own new key) lives on the
    worker that began it; the code and the cloud password reach the other worker and the
    login still completes, by phone and by QR code. Neither is ever in the database."""
    fake = telegram.fake
    workers = Workers(homeserver, postgres_uri, tmp_path, None, extra={"networks": {
        "telegram": telegram_settings(telegram, tmp_path / "telegram.pub")}})
    try:
        await workers.start("w1")
        await workers.start("w2")
        person = fake.add_person("Alice", password="tr0ub4dor")
        alice = await new_user("alice")
        bot = homeserver.bot_mxid
        room = await alice.open_management_room(bot)
        workers.pin("w1")
        await alice.send_text(room, f"link telegram +{person.phone}")
        await alice.wait_for_notice(room, bot, "Send the code")
        workers.pin("w2")  # every step from now on reaches the other worker
        await alice.send_text(room, "11111")
        await alice.wait_for_notice(room, bot, "not the one Telegram sent")
        code = fake.code_for(person)
        await alice.send_text(room, code)
        await alice.wait_for_notice(room, bot, "send its cloud password")
        await alice.send_text(room, "tr0ub4dor")
        await alice.wait_for_notice(room, bot, "Reply yes to link")
        workers.pin(None)
        await alice.send_text(room, "yes")
        await alice.wait_for_notice(room, bot, f"Linked telegram:{person.id}")
        # The code was single-use: said again, it is a message like any other.
        await alice.send_text(room, code)
        await alice.wait_for_notice(room, bot, "Unknown command")

        # By QR code: shown by the second worker, "done" said to the first.
        other = fake.add_person("Bob")
        bob = await new_user("bob")
        bob_room = await bob.open_management_room(bot)
        workers.pin("w2")
        await bob.send_text(bob_room, "link telegram")
        prompt = await bob.wait_for_notice(bob_room, bot, "Scan this QR code")
        image = await bob.wait_for_event(bob_room, lambda e: (
            e.type == EventType.ROOM_MESSAGE and e.sender == bot
            and getattr(e.content, "msgtype", None) == MessageType.IMAGE), "the QR image")
        await telegram.run(fake.accept_qr(qr_token(prompt), other))
        workers.pin("w1")
        await bob.send_text(bob_room, "done")
        await bob.wait_for_notice(bob_room, bot, "Reply yes to link")
        # The scanned code's image is gone from the room, though another worker showed it.
        assert not (await bob.client.get_event(bob_room, image.event_id)
                    ).content.serialize().get("url")
        await bob.send_text(bob_room, "yes")
        await bob.wait_for_notice(bob_room, bot, f"Linked telegram:{other.id}")

        db = Database.create(postgres_uri)
        await db.start()
        try:
            for table in ("one_time_secret", "audit_log", "persona"):
                rows = await db.fetch(f"SELECT * FROM {table}")
                for secret in (code, "tr0ub4dor"):
                    assert all(secret not in str(value) for row in rows
                               for value in tuple(row)), (table, secret)
        finally:
            await db.stop()
    finally:
        await workers.stop()


async def test_a_message_the_muc_refuses_is_reported_not_recorded_as_sent(
        start_bridge, homeserver, new_user, prosody, xmpp_peer):
    """The room answers alice's message with an error (she has no voice there): she is told
    it was not delivered, at once, and it is not counted as sent. Once she may speak again,
    "retry" sends it, once."""
    await start_bridge(extra=xmpp_on(prosody))
    alice = await new_user("alice")
    alice_xmpp, bob = await xmpp_peer("alice"), await xmpp_peer("bob")
    await alice_xmpp.stop()
    bot = homeserver.bot_mxid
    muc = f"team{bob.nick}@{MUC}"
    await bob.join(muc)
    room = await link_xmpp(alice, alice_xmpp, homeserver)
    await alice.send_text(room, f"map xmpp {muc} --profile Jobb")
    await alice.wait_for_notice(room, bot, f"Mapped xmpp {muc} into Jobb")
    portal = await alice.wait_for_invite()
    await alice.send_text(portal, "before")
    await bob.wait_for(lambda m: m["body"] == "before", "alice's first message")
    muc_admin = bob.client.plugin["xep_0045"]
    await muc_admin.set_role(JID(muc), alice_xmpp.nick, "visitor")  # bob, the owner, mutes her
    await alice.send_text(portal, "while muted")
    notice = await alice.wait_for_notice(portal, bot, "Not delivered")
    assert "could not be sent to xmpp" in notice, notice
    told = await alice.wait_for_notice(room, bot, "was not delivered")
    assert "refused it (forbidden" in told, told

    await muc_admin.set_role(JID(muc), alice_xmpp.nick, "participant")
    await alice.send_text(room, "retry")
    await alice.wait_for_notice(room, bot, "Sending again what was not delivered")
    await bob.wait_for(lambda m: m["body"] == "while muted", "the message sent again")
    await alice.send_text(portal, "after")
    await bob.wait_for(lambda m: m["body"] == "after", "alice's last message")
    said = [m["body"] for m in bob.messages if m["type"] == "groupchat"]
    assert [b for b in said if b in ("before", "while muted", "after")] == [
        "before", "while muted", "after"], said
    # Nothing of it came back into the room (the error, a late reflection).
    bodies = [e.content.body for e in await alice.room_events(portal)
              if e.type == EventType.ROOM_MESSAGE]
    assert bodies.count("while muted") == 1, bodies


async def test_a_worker_call_opens_only_where_and_as_it_was_sealed():
    """What a worker hands another (a Telegram code, say) is unreadable in the NOTIFY and
    opens only for the worker it was sealed for, in its direction, under its call id."""
    key = secrets.token_bytes(32)

    async def vault_key() -> bytes:
        return key

    seal = CallSeal(vault_key)
    sealed = await seal.seal("c1", "call", "w1", "w2", {"answers": {"code": "12345"}})
    assert "12345" not in sealed and "12345" not in base64.b64decode(sealed).decode(
        errors="replace")
    assert await seal.open("c1", "call", "w1", "w2", sealed) == {"answers": {"code": "12345"}}
    for call_id, direction, sender, receiver in (("c2", "call", "w1", "w2"),
                                                 ("c1", "answer", "w1", "w2"),
                                                 ("c1", "call", "w3", "w2"),
                                                 ("c1", "call", "w1", "w3")):
        with pytest.raises(ValueError):
            await seal.open(call_id, direction, sender, receiver, sealed)

    async def other_key() -> bytes:
        return secrets.token_bytes(32)

    with pytest.raises(ValueError):  # sealed by something without the vault's key
        await CallSeal(other_key).open("c1", "call", "w1", "w2", sealed)
