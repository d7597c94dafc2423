"""Discord history in Matrix, end to end (the unmodified discord.py against the wire-level
fake, real Synapse): a mapped channel's portal starts with its newest messages (its threads'
too), in order, with their original times and senders, replies, threads, edits and
reactions; what was said while the bridge was stopped arrives after a restart, once and in
order."""

from __future__ import annotations

import time

import pytest
from mautrix.types import EventType

from tests.fakes.discord import FakeDiscord
from tests.fakes.discord.models import Attachment, snowflake

from .support.discord import build_world, discord_settings, link_discord
from .support.slack_history import bodies, until_bodies


@pytest.fixture
async def discord():
    async with FakeDiscord() as fake:
        yield fake


def _settings(discord: FakeDiscord, homeserver) -> dict:
    callback = f"{homeserver.appservice_url}/link/discord/callback"
    return {"networks": {"discord": {**discord_settings(discord, callback),
                                     "backfill": {"initial_messages": 5}}},
            "backfill": {"notice_threshold": 3}}


async def test_history_and_catch_up_after_a_restart(start_bridge, discord, new_user,
                                                    homeserver):
    world = build_world(discord)
    general, bob, carol = world.general, world.bob, world.carol
    # An hour ago, a minute apart: six messages (one too many for five), a reply, a thread
    # on h1 with a reply in it, an edit and reactions.
    hour_ago = int(time.time() * 1000) - 3_600_000

    async def old(author, text: str, minute: int, **options):
        return await discord.post(options.pop("where", general), author, text,
                                  message_id=snowflake(hour_ago + minute * 60_000), **options)

    await old(bob, "too old for five", 0)
    h1 = await old(bob, "h1", 1)
    await old(carol, "h2", 2, attachments=[
        Attachment(snowflake(), "notes.txt", "text/plain", b"minutes of the meeting")])
    h3 = await old(bob, "h3", 3, reply_to=h1)
    thread = await discord.open_thread(general, "about h1", carol, from_message=h1)
    await old(carol, "t1", 4, where=thread)
    await old(bob, "h4", 5)
    await discord.edit(h3, "h3 edited")
    await discord.react(carol, h1, "👍")
    await discord.react(bob, h1, "👍")

    bridge = await start_bridge(extra=_settings(discord, homeserver))
    alice = await new_user("alice")
    bot = homeserver.bot_mxid
    room = await link_discord(alice, bot, discord, world.alice)
    # The first history read is refused with a 429: the backfill waits it out.
    discord.rate_limit(f"/channels/{general.id}/messages", retry_after=0.5, method="GET")
    await alice.send_text(room, f"map discord {world.guild.id}/#general --profile Jobb")
    portal = await alice.wait_for_invite()

    events = await until_bodies(alice, portal, "h4")
    assert bodies(events) == ["h1", "h2", "notes.txt", "h3 edited", "t1", "h4"]
    by_body = {e.content.body: e for e in events if e.type == EventType.ROOM_MESSAGE}
    sent = {m.content: m for m in discord.messages(general) + discord.messages(thread)}
    sent["h3 edited"] = h3
    for body, author in (("h1", bob), ("h2", carol), ("h3 edited", bob), ("t1", carol),
                         ("h4", bob)):
        # The original time, to the millisecond, and the author's ghost.
        assert by_body[body].timestamp == (int(sent[body].id) >> 22) + 1420070400000
        assert by_body[body].sender == bridge.router.ghosts.ghost_mxid("discord", author.id)
    # Its file as in live bridging: the file itself in Matrix, from its author.
    file = by_body["notes.txt"]
    assert file.sender == by_body["h2"].sender and file.content.msgtype.value == "m.file"
    assert await alice.client.download_media(file.content.url) == b"minutes of the meeting"
    assert by_body["h3 edited"].content.relates_to.in_reply_to.event_id == (
        by_body["h1"].event_id)
    assert by_body["t1"].content.get_thread_parent() == by_body["h1"].event_id
    reactions = [e for e in events if e.type == EventType.REACTION]
    assert sorted(r.sender for r in reactions) == sorted(
        bridge.router.ghosts.ghost_mxid("discord", u.id) for u in (bob, carol))
    assert {(r.content.relates_to.event_id, r.content.relates_to.key) for r in reactions} == {
        (by_body["h1"].event_id, "👍")}
    # History is read with Discord's own paging, and nothing came before a 429's wait was up.
    assert all(int(q.get("limit", 50)) <= 100 for _, q in discord.history_reads)
    assert [c.status for c in discord.calls(f"/channels/{general.id}/messages", "GET")
            ][:2] == [429, 200]
    assert discord.rest.early == []
    await alice.wait_for_notice(room, bot, "The history of #general is in: 6 messages",
                                after=None)

    # A channel the person may not see (a permission overwrite) is not theirs to map.
    secret = discord.add_channel(world.guild, "secret")
    secret.hidden_from.add(world.alice.id)
    await discord.gateway.dispatch("CHANNEL_CREATE", secret.payload())
    await old(bob, "not for alice", 6, where=secret)
    await alice.send_text(room, f"map discord {world.guild.id}/#secret --profile Jobb")
    await alice.wait_for_notice(room, bot, "you may not see #secret")
    assert not [q for c, q in discord.history_reads if c == secret.id]

    # Stopped: what is said meanwhile (in the channel and its thread) comes after the
    # restart, once and in order.
    await bridge.stop()
    await discord.post(general, carol, "while away 1")
    await discord.post(thread, bob, "while away in the thread")
    await discord.post(general, bob, "while away 2")
    await start_bridge(extra=_settings(discord, homeserver))
    await until_bodies(alice, portal, "while away 2")
    await discord.post(general, bob, "live again")
    events = await until_bodies(alice, portal, "live again")
    assert bodies(events) == ["h1", "h2", "notes.txt", "h3 edited", "t1", "h4", "while away 1",
                              "while away in the thread", "while away 2", "live again"]
