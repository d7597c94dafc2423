"""Telegram history in Matrix, end to end (the unmodified Telethon against the wire-level
fake, real Synapse): a mapped chat's portal starts with its newest messages, in order, with
their original times and senders, forum topics as threads, replies, edits and reactions,
after waiting out Telegram's FLOOD_WAIT; what was said while the bridge was stopped arrives
after a restart, once and in order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from mautrix.types import EventType
from telethon import TelegramClient

from tests.fakes.telegram import TelegramThread

from .support.slack_history import bodies, until_bodies
from .support.telegram import link_by_qr, telegram_settings


@pytest.fixture(scope="module")
def server():
    thread = TelegramThread()
    thread.start()
    # Telethon keeps the data centres' addresses for the whole process: this fake has its own.
    TelegramClient._config = None
    yield thread
    thread.stop()


def _settings(server: TelegramThread, tmp_path) -> dict:
    return {"networks": {"telegram": {**telegram_settings(server, tmp_path / "tg.pub"),
                                      "backfill": {"initial_messages": 5}}},
            "backfill": {"notice_threshold": 3}}


async def test_history_and_catch_up_after_a_restart(start_bridge, server, new_user,
                                                    homeserver, tmp_path):
    fake = server.fake
    person = fake.add_person("Alice")
    bob = fake.add_person("Bob")
    carol = fake.add_person("Carol")
    forum = fake.add_group("Makers", [person, bob, carol], forum=True,
                           username=f"makers{bob.id}")
    topic = await server.run(fake.create_topic(bob, forum, "Printing"))
    # An hour ago, a minute apart: six messages (one too many for five), two of them in a
    # topic (the second a reply to the first), an edit and reactions.
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)

    async def old(author, text: str, minute: int, **options) -> int:
        ids = await server.run(fake.send_as(author, forum, text, **options,
                                            date=start + timedelta(minutes=minute)))
        return ids[author.id]

    await old(bob, "too old for five", 0)
    h1 = await old(bob, "h1", 1)
    h2 = await old(carol, "h2", 2)
    t1 = await old(carol, "t1", 3, topic=topic)
    await old(bob, "t2", 4, topic=topic, reply_to=t1)
    await old(bob, "h3", 5)
    await server.run(fake.edit_as(carol, forum, h2, "h2 edited"))
    await server.run(fake.react_as(carol, forum, h1, "👍"))
    await server.run(fake.react_as(bob, forum, h1, "🔥"))

    bridge = await start_bridge(extra=_settings(server, tmp_path))
    alice = await new_user("alice")
    bot = homeserver.bot_mxid
    room = await alice.open_management_room(bot)
    await link_by_qr(alice, bot, room, server, person)
    mark = len(fake.calls)
    await server.call(fake.flood, "messages.GetHistory", 1)  # the first read must wait
    await alice.send_text(room, f"map telegram @makers{bob.id}")
    portal = await alice.wait_for_invite()

    events = await until_bodies(alice, portal, "h3")
    assert bodies(events) == ["h1", "h2 edited", "Topic: Printing", "t1", "t2", "h3"]
    reads = [c for c in fake.calls_of("messages.GetHistory", mark) if c.user_id == person.id]
    assert reads[0].error == "FLOOD_WAIT_1" and reads[1].at - reads[0].at >= 1.0
    by_body = {e.content.body: e for e in events if e.type == EventType.ROOM_MESSAGE}
    for body, author, minute in (("h1", bob, 1), ("h2 edited", carol, 2), ("t1", carol, 3),
                                 ("t2", bob, 4), ("h3", bob, 5)):
        # The original time and the author's ghost.
        assert by_body[body].timestamp == int(
            (start + timedelta(minutes=minute)).timestamp() * 1000), body
        assert by_body[body].sender == bridge.router.ghosts.ghost_mxid("telegram",
                                                                       str(author.id))
    root = by_body["Topic: Printing"].event_id
    assert by_body["t1"].content.get_thread_parent() == root
    assert by_body["t2"].content.get_thread_parent() == root
    assert by_body["t2"].content.get_reply_to() == by_body["t1"].event_id
    assert by_body["h1"].content.get_thread_parent() is None
    reactions = {(r.sender, r.content.relates_to.event_id, r.content.relates_to.key)
                 for r in events if r.type == EventType.REACTION}
    ghost = bridge.router.ghosts.ghost_mxid
    assert reactions == {(ghost("telegram", str(carol.id)), by_body["h1"].event_id, "👍"),
                         (ghost("telegram", str(bob.id)), by_body["h1"].event_id, "🔥")}

    # Stopped: what is said meanwhile comes after the restart, once and in order (whether
    # Telegram's update difference or the history brings it first).
    await bridge.stop()
    await server.run(fake.send_as(carol, forum, "while away 1"))
    await server.run(fake.send_as(bob, forum, "while away in the topic", topic=topic))
    await server.run(fake.send_as(bob, forum, "while away 2"))
    await start_bridge(extra=_settings(server, tmp_path))
    await until_bodies(alice, portal, "while away 2")
    await server.run(fake.send_as(bob, forum, "live again"))
    events = await until_bodies(alice, portal, "live again")
    assert bodies(events) == ["h1", "h2 edited", "Topic: Printing", "t1", "t2", "h3",
                              "while away 1", "while away in the topic", "while away 2",
                              "live again"]
