"""Discord when things go wrong, end to end: 429 storms and the global limit (through the
delivery queue, nothing early, nothing lost), a Gateway drop mid-burst and an invalid
session (every message exactly once), a webhook a server admin deleted, and a revoked grant
(read-only, relink, what waited goes out in order). One bridge, fake and linked account per
database for the module."""

from __future__ import annotations

import asyncio
import time

import pytest
from mautrix.types import EventType

from .support.discord import Env, contents, db_kind, env, link_discord

pytestmark = pytest.mark.asyncio(loop_scope="module")
__all__ = ["db_kind", "env"]  # the module's shared bridge, fake and linked account


def bodies(events, sender: str | None = None) -> list[str]:
    return [e.content.body for e in events if e.type == EventType.ROOM_MESSAGE
            and (sender is None or e.sender == sender)]


async def test_a_429_storm_and_the_global_limit_lose_nothing(env: Env):
    discord, world, alice = env.discord, env.world, env.alice
    portal = await env.portal("general")
    storm = discord.rate_limit("/webhooks/", retry_after=0.5, times=3, method="POST")
    for i in range(4):
        await alice.send_text(portal, f"storm {i}")
    await discord.wait_until(lambda: [t for t in contents(discord, world.general)
                                      if t.startswith("storm")]
                             == [f"storm {i}" for i in range(4)], "the whole storm, in order")
    assert storm.times == 0  # every 429 was answered
    # After each 429, nothing came before its retry_after had passed; and the 429s did not
    # use up the three attempts (max_attempts is 3 here).
    assert discord.rest.early == []
    discord.rate_limit("/webhooks/", retry_after=0.5, times=1, is_global=True)
    await alice.send_text(portal, "after the global limit")
    await discord.wait_until(lambda: "after the global limit" in contents(
        discord, world.general), "the message held by the global limit")
    assert discord.rest.early == []


async def test_a_gateway_drop_and_an_invalid_session_lose_nothing(env: Env):
    discord, world, alice = env.discord, env.world, env.alice
    portal = await env.portal("general")
    for i in range(3):
        await discord.post(world.general, world.bob, f"burst {i}")
    await discord.gateway.drop()  # resumable: what is dispatched meanwhile is replayed
    for i in range(3, 6):
        await discord.post(world.general, world.bob, f"burst {i}")
    await discord.wait_until(lambda: discord.gateway.resumes >= 1, "the RESUME")
    for i in range(6, 8):
        await discord.post(world.general, world.bob, f"burst {i}")
    await discord.gateway.invalidate()  # not resumable: nothing is replayed
    for i in range(8, 11):
        await discord.post(world.general, world.bob, f"burst {i}")
    await discord.wait_until(lambda: discord.gateway.identifies >= 2, "the fresh IDENTIFY")
    await discord.post(world.general, world.bob, "burst 11")
    await alice.wait_for_event(portal, lambda e: e.type == EventType.ROOM_MESSAGE
                               and e.content.body == "burst 11", "the last", after=None)
    expected = [f"burst {i}" for i in range(12)]

    def arrived(events) -> list[str]:
        return [b for b in bodies(events) if b.startswith("burst")]

    deadline = time.monotonic() + 60
    events = await alice.room_events(portal, limit=200)
    while sorted(arrived(events)) != sorted(expected) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        events = await alice.room_events(portal, limit=200)
    # Each exactly once, and in order: what the Gateway brings after a drop waits until
    # the session is resumed, or until the fresh session's catch-up is under way.
    assert arrived(events) == expected


async def test_a_deleted_webhook_is_made_again(env: Env):
    discord, world, alice = env.discord, env.world, env.alice
    portal = await env.portal("general")
    await alice.send_text(portal, "with the first webhook")
    await discord.wait_until(lambda: "with the first webhook" in contents(
        discord, world.general), "the first message")
    first = next(m for m in discord.messages(world.general)
                 if m.content == "with the first webhook").webhook_id
    await discord.delete_webhook(discord.webhooks[first])
    await alice.send_text(portal, "with a new webhook")
    await discord.wait_until(lambda: "with a new webhook" in contents(
        discord, world.general), "the message through the new webhook")
    again = next(m for m in discord.messages(world.general)
                 if m.content == "with a new webhook").webhook_id
    assert again != first and discord.webhooks[again].creator.id == discord.app.bot.id
    assert [w.channel_id for w in discord.webhooks.values()].count(world.general.id) == 1


async def test_a_revoked_grant_turns_read_only_and_relink_delivers_in_order(env: Env):
    discord, world, alice, bot = env.discord, env.world, env.alice, env.bot
    portal = await env.portal("general")
    await alice.send_text(portal, "before")
    await discord.wait_until(lambda: "before" in contents(discord, world.general), "before")
    discord.revoke_grants(world.alice)  # removed under Discord's Authorized Apps

    await alice.send_text(portal, "during 1")
    ref = f"discord:{world.alice.id}"
    prompt = await alice.wait_for_notice(env.room, bot, "read-only", after=None)
    assert f"relink {ref}" in prompt
    await alice.send_text(portal, "during 2")
    # Inbound keeps flowing meanwhile.
    await discord.post(world.general, world.bob, "still there?")
    await alice.wait_for_event(portal, lambda e: e.type == EventType.ROOM_MESSAGE
                               and e.content.body == "still there?", "inbound while read-only",
                               after=None)
    assert "during 1" not in contents(discord, world.general)

    await link_discord(alice, bot, discord, world.alice, command=f"relink {ref}",
                       room=env.room)
    await discord.wait_until(lambda: contents(discord, world.general)[-2:]
                             == ["during 1", "during 2"], "the queued messages, in order")
    account = await env.bridge.accounts.for_matrix_user(alice.mxid)
    persona = await env.bridge.accounts.find_persona(account.id, ref)
    assert persona.status.value == "active"


async def test_a_channel_that_keeps_refusing_is_not_sent_to(env: Env):
    discord, world, alice = env.discord, env.world, env.alice
    locked = discord.add_channel(world.guild, "locked")
    await discord.gateway.dispatch("CHANNEL_CREATE", locked.payload())
    await alice.send_text(env.room, f"map discord {world.guild.id}/#locked --profile Jobb")
    await alice.wait_for_notice(env.room, env.bot, "Mapped discord")
    portal = await alice.wait_for_invite()
    await alice.send_text(portal, "first")
    await discord.wait_until(lambda: "first" in contents(discord, locked), "first")
    hook = next(m.webhook_id for m in discord.messages(locked))
    discord.refusing.add(locked.id)  # a server admin took the bot's permissions away
    for i in range(5):
        await alice.send_text(portal, f"refused {i}")
        await alice.wait_for_notice(portal, env.bot, "Not delivered")
    # Three refusals (max_refusals here) and the bridge stopped asking: Discord saw no more.
    executions = [c for c in discord.calls(f"/webhooks/{hook}/", "POST")]
    assert [c.status for c in executions] == [200, 403, 403, 403]
    told = await alice.wait_for_notice(env.room, env.bot, "stopped sending there", after=None)
    assert "permissions" in told
