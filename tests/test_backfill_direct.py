"""Direct chats' history in Matrix, end to end (real Synapse, both databases): a 1:1
conversation's portal, made by its first live message, starts with the conversation's recent
past, in order, with original times, senders, threads, edits and reactions, and the message
that made it after that past, once; what was said while the bridge was stopped comes in
after a restart, once and in order. Read as the person whose conversation it is."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from mautrix.types import EventType
from telethon import TelegramClient

from tests.fakes.slack import FakeSlack
from tests.fakes.telegram import TelegramThread

from .support import slack_history as history
from .support.prosody import ProsodyServer
from .support.slack import link_slack
from .support.slack_history import bodies, slack, timeline, until_bodies, world
from .support.telegram import link_by_qr, telegram_settings
from .test_xmpp import correction, link_xmpp

__all__ = ["slack", "world"]  # the Slack fake and its world, as fixtures


@pytest.fixture(scope="module")
def telegram():
    thread = TelegramThread()
    thread.start()
    # Telethon keeps the data centres' addresses for the whole process: this fake has its own.
    TelegramClient._config = None
    yield thread
    thread.stop()


def _slack_settings(slack: FakeSlack, homeserver) -> dict:
    return history.history_settings(slack, homeserver, 5)


async def test_slack_direct_chat_starts_with_its_past_and_catches_up(
        start_bridge, slack, world, new_user, homeserver):
    dm = world.dm
    # The bridge is running (someone else of the workspace linked, so its Socket Mode is
    # open), but alice has not linked yet: what she and bob say reaches nobody in Matrix.
    bridge = await start_bridge(extra=_slack_settings(slack, homeserver))
    await link_slack(await new_user("carol"), homeserver.bot_mxid, slack, world.carol)
    # An hour ago: six messages between the two (one too many), a thread reply, an edit
    # and a reaction.
    h1, _ = await history.post_past(slack, dm, world.bob, world.alice, "d")
    await slack.settle()

    alice = await new_user("alice")
    await link_slack(alice, homeserver.bot_mxid, slack, world.alice)
    # Bob writes: the direct chat's portal is made, its past comes first. A second message
    # sent while the past is read waits behind it.
    portal = await history.live_while_history_held(
        slack, lambda: slack.post_message(world.bob, dm, "live 1"), alice, dm, world.bob,
        "live 2")

    events = await until_bodies(alice, portal, "live 2")
    assert bodies(events) == ["d1", "d2", "d3 edited", "t1", "live 1", "live 2"]
    by_body = history.messages_by_body(events)
    sent = history.sent_by_text(slack, dm)
    ghost = bridge.router.ghosts.ghost_mxid
    for body, author in (("d1", world.bob), ("d2", world.alice), ("t1", world.alice),
                         ("live 1", world.bob)):
        assert by_body[body].timestamp == int(float(sent[body].ts) * 1000)
        assert by_body[body].sender == ghost("slack", f"{world.team.id}/{author.id}")
    assert by_body["t1"].content.get_thread_parent() == by_body["d1"].event_id
    reaction = next(e for e in events if e.type == EventType.REACTION)
    assert reaction.content.relates_to.event_id == by_body["d1"].event_id
    assert reaction.content.relates_to.key == "👍"
    assert reaction.sender == by_body["d2"].sender  # alice

    # Stopped: what the two said meanwhile comes after the restart, once and in order.
    await bridge.stop()
    await slack.post_message(world.bob, dm, "away 1")
    await slack.post_message(world.alice, dm, "away 2")
    await slack.post_message(world.bob, dm, "away 3", thread_ts=h1.ts)
    await start_bridge(extra=_slack_settings(slack, homeserver))
    await until_bodies(alice, portal, "away 3")
    await slack.post_message(world.bob, dm, "live again")
    events = await until_bodies(alice, portal, "live again")
    assert bodies(events) == ["d1", "d2", "d3 edited", "t1", "live 1", "live 2", "away 1",
                              "away 2", "away 3", "live again"]
    by_body = history.messages_by_body(events)
    assert by_body["away 3"].content.get_thread_parent() == by_body["d1"].event_id
    assert len(await timeline(alice, portal)) == len(events)


def _telegram_settings(server: TelegramThread, tmp_path) -> dict:
    return {"networks": {"telegram": {**telegram_settings(server, tmp_path / "tg.pub"),
                                      "backfill": {"initial_messages": 5}}}}


async def test_telegram_private_chat_starts_with_its_past_and_catches_up(
        start_bridge, telegram, new_user, homeserver, tmp_path):
    fake = telegram.fake
    person = fake.add_person("Alice")
    bob = fake.add_person("Bob")
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)

    async def old(author, to, text: str, minute: int, **options) -> dict[int, int]:
        return await telegram.run(fake.send_as(author, to, text, **options,
                                               date=start + timedelta(minutes=minute)))

    # An hour ago: five messages (one too many for five with the one that opens the chat in
    # Matrix), a reply, an edit and a reaction. Each of the two numbers the chat's messages
    # their own way.
    await old(bob, person, "one too many", 0)
    p1 = await old(bob, person, "p1", 1)
    await old(person, bob, "p2", 2)
    p3 = await old(bob, person, "p3", 3, reply_to=(await old(bob, person, "p0", 2))[bob.id])
    await telegram.run(fake.edit_as(bob, person, p3[bob.id], "p3 edited"))
    await telegram.run(fake.react_as(person, bob, p1[person.id], "👍"))

    bridge = await start_bridge(extra=_telegram_settings(telegram, tmp_path))
    alice = await new_user("alice")
    bot = homeserver.bot_mxid
    await link_by_qr(alice, bot, await alice.open_management_room(bot), telegram, person)
    await telegram.run(fake.send_as(bob, person, "live 1"))
    portal = await alice.wait_for_invite()
    events = await until_bodies(alice, portal, "live 1")
    assert bodies(events) == ["p1", "p2", "p0", "p3 edited", "live 1"]
    by_body = history.messages_by_body(events)
    ghost = bridge.router.ghosts.ghost_mxid
    for body, author, minute in (("p1", bob, 1), ("p2", person, 2), ("p3 edited", bob, 3)):
        assert by_body[body].timestamp == int(
            (start + timedelta(minutes=minute)).timestamp() * 1000), body
        assert by_body[body].sender == ghost("telegram", str(author.id)), body
    assert by_body["p3 edited"].content.get_reply_to() == by_body["p0"].event_id
    [reaction] = [e for e in events if e.type == EventType.REACTION]
    assert reaction.content.relates_to.event_id == by_body["p1"].event_id
    assert reaction.content.relates_to.key == "👍"
    assert reaction.sender == ghost("telegram", str(person.id))

    # Stopped: what the two said meanwhile comes after the restart, once and in order
    # (whether Telegram's update difference or the history brings it first).
    await bridge.stop()
    await telegram.run(fake.send_as(bob, person, "away 1"))
    await telegram.run(fake.send_as(person, bob, "away 2"))
    await telegram.run(fake.send_as(bob, person, "away 3"))
    await start_bridge(extra=_telegram_settings(telegram, tmp_path))
    await until_bodies(alice, portal, "away 3")
    await telegram.run(fake.send_as(bob, person, "live again"))
    events = await until_bodies(alice, portal, "live again")
    assert bodies(events) == ["p1", "p2", "p0", "p3 edited", "live 1", "away 1", "away 2",
                              "away 3", "live again"]
    assert len(await timeline(alice, portal)) == len(events)


def _xmpp_settings(prosody: ProsodyServer) -> dict:
    return {"networks": {"xmpp": {"enabled": True, "ca_file": str(prosody.ca),
                                  "nameserver": prosody.nameserver,
                                  "backfill": {"initial_messages": 4}}}}


async def chat(sender, receiver, text: str, **extra) -> str:
    """Say it and wait until it arrived, so the archive keeps this order."""
    sent = sender.send(receiver.jid, text, kind="chat", **extra)
    await receiver.wait_for(lambda m: m["body"] == text, f"{text!r}")
    return sent


async def test_xmpp_direct_chat_starts_with_its_past_and_catches_up(
        start_bridge, prosody, new_user, xmpp_peer, homeserver):
    alice_xmpp, bob = await xmpp_peer("alice"), await xmpp_peer("bob")
    # Earlier, from alice's own XMPP client: both sides of the conversation and a
    # correction, in the account's archive (XEP-0313).
    await chat(bob, alice_xmpp, "one too many")
    await chat(bob, alice_xmpp, "x1")
    await chat(alice_xmpp, bob, "x2")
    third = await chat(bob, alice_xmpp, "x3")
    await chat(bob, alice_xmpp, "x3 fixed", edit=correction(third))
    await alice_xmpp.stop()

    bridge = await start_bridge(extra=_xmpp_settings(prosody))
    alice = await new_user("alice")
    await link_xmpp(alice, alice_xmpp, homeserver)
    bob.send(alice_xmpp.jid, "live 1", kind="chat")
    portal = await alice.wait_for_invite()
    events = await until_bodies(alice, portal, "live 1")
    assert bodies(events) == ["x1", "x2", "x3 fixed", "live 1"]
    messages = [e for e in events if e.type == EventType.ROOM_MESSAGE]
    stamps = [e.timestamp for e in messages]
    assert stamps == sorted(stamps)
    ghost = bridge.router.ghosts.ghost_mxid
    assert [e.sender for e in messages] == [ghost("xmpp", bob.jid), ghost("xmpp", alice_xmpp.jid),
                                            ghost("xmpp", bob.jid), ghost("xmpp", bob.jid)]

    # Stopped: what bob says meanwhile comes after the restart, once and in order (the
    # server's offline store and the archive both have it).
    await bridge.stop()
    for text in ("away 1", "away 2"):
        bob.send(alice_xmpp.jid, text, kind="chat")
    bridge = await start_bridge(extra=_xmpp_settings(prosody))
    await until_bodies(alice, portal, "away 2")

    # The server restarts: the session reconnects and catches its direct chats up.
    prosody.restart()
    await bob.reconnect()
    bob.send(alice_xmpp.jid, "after the server restart", kind="chat")
    await until_bodies(alice, portal, "after the server restart")
    bob.send(alice_xmpp.jid, "live again", kind="chat")
    events = await until_bodies(alice, portal, "live again")
    assert bodies(events) == ["x1", "x2", "x3 fixed", "live 1", "away 1", "away 2",
                              "after the server restart", "live again"]
    assert len(await timeline(alice, portal)) == len(events)
