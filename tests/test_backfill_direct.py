"""Direct chats' history in Matrix, end to end (real Synapse, both databases): a 1:1
conversation's portal, made by its first live message, starts with the conversation's recent
past, in order, with original times, senders, threads, edits and reactions, and the message
that made it after that past, once; what was said while the bridge was stopped comes in
after a restart, once and in order. Read as the person whose conversation it is."""

from __future__ import annotations

import asyncio

import pytest
from mautrix.types import EventType

from tests.fakes.slack import FakeSlack
from tests.fakes.slack.scenario import World, build_world

from .support.matrix import DEADLINE
from .support.slack import link_slack, slack_settings
from .test_backfill_slack import bodies, timeline, until_bodies


@pytest.fixture
async def slack():
    async with FakeSlack() as fake:
        yield fake


@pytest.fixture
def world(slack) -> World:
    return build_world(slack)


def _slack_settings(slack: FakeSlack, homeserver) -> dict:
    callback = f"{homeserver.appservice_url}/link/slack/callback"
    return {"networks": {"slack": {**slack_settings(slack, callback),
                                   "backfill": {"initial_messages": 5}}}}


async def test_slack_direct_chat_starts_with_its_past_and_catches_up(
        start_bridge, slack, world, new_user, homeserver):
    dm = world.dm
    # An hour ago: six messages between the two (one too many), a thread reply, an edit
    # and a reaction.
    slack.state.time_offset = -3600
    await slack.post_message(world.bob, dm, "too old for five")
    h1 = await slack.post_message(world.bob, dm, "d1")
    await slack.post_message(world.alice, dm, "d2")
    h3 = await slack.post_message(world.bob, dm, "d3")
    await slack.post_message(world.alice, dm, "t1", thread_ts=h1.ts)
    await slack.edit_message(world.bob, dm, h3.ts, "d3 edited")
    await slack.add_reaction(world.alice, dm, h1.ts, "thumbsup")
    slack.state.time_offset = 0

    bridge = await start_bridge(extra=_slack_settings(slack, homeserver))
    alice = await new_user("alice")
    await link_slack(alice, homeserver.bot_mxid, slack, world.alice)
    # Bob writes: the direct chat's portal is made, its past comes first. A second message
    # sent while the past is read waits behind it.
    hold = slack.hold_after("conversations.history", 1)
    await slack.post_message(world.bob, dm, "live 1")
    portal = await alice.wait_for_invite()
    async with asyncio.timeout(DEADLINE):
        await hold.reached.wait()
    await slack.post_message(world.bob, dm, "live 2")
    hold.release()

    events = await until_bodies(alice, portal, "live 2")
    assert bodies(events) == ["d1", "d2", "d3 edited", "t1", "live 1", "live 2"]
    by_body = {e.content.body: e for e in events if e.type == EventType.ROOM_MESSAGE}
    sent = {m.text: m for m in slack.messages(dm)}
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
    by_body = {e.content.body: e for e in events if e.type == EventType.ROOM_MESSAGE}
    assert by_body["away 3"].content.get_thread_parent() == by_body["d1"].event_id
    assert len(await timeline(alice, portal)) == len(events)
