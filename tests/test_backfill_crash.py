"""A bridge killed (kill -9), or stopped, in the middle of bringing in a channel's history, on
real Synapse with the Slack fake: after the restart the room shows every history message
exactly once, in order, with its original time, and the live messages sent during the
backfill and while the bridge was down after them."""

from __future__ import annotations

import asyncio

from mautrix.types import EventType

from tests.fakes.slack import FakeSlack
from tests.fakes.slack.scenario import build_world

from .support.bridge_process_setup import slack_general_process
from .support.matrix import DEADLINE, MatrixUser
from .support.slack import slack_settings
from .support.slack_history import bodies, link_and_map_general, timeline

HISTORY = 60
DOWN = 15
STOPPED_HISTORY = 20


async def until(user: MatrixUser, room: str, done, what: str) -> list:
    """The room's timeline once `done(bodies)` holds (polled)."""
    try:
        async with asyncio.timeout(DEADLINE * 2):
            while True:
                events = await timeline(user, room)
                if done(bodies(events)):
                    return events
                await asyncio.sleep(0.2)
    except TimeoutError:
        raise AssertionError(f"never {what}: {bodies(await timeline(user, room))}") from None


async def test_kill_9_mid_backfill_resumes_without_gaps_or_duplicates(homeserver, db_uri,
                                                                      tmp_path, new_user):
    async with FakeSlack() as slack:
        world = build_world(slack)
        general = world.general
        slack.state.time_offset = -3600  # an hour ago
        for i in range(HISTORY):
            await slack.post_message(world.bob if i % 2 else world.carol, general, f"h{i}")
        slack.state.time_offset = 0
        # Slow enough that the kill lands with part of the history in Matrix.
        async with slack_general_process(
                homeserver, db_uri, tmp_path, new_user, slack, world,
                slack_extra={"backfill": {"initial_messages": HISTORY}},
                extra={"backfill": {"rate": 4, "burst": 1}}) as mapped:
            bridge, alice, portal = mapped.bridge, mapped.alice, mapped.portal
            await until(alice, portal, lambda b: len(b) >= 5, "a first part of the history")
            # Said while the history comes in: waits behind it (and dies with the bridge).
            await slack.post_message(world.bob, general, "live during backfill")
            await until(alice, portal, lambda b: len(b) >= 10, "more of the history")
            bridge.kill()
            before = bodies(await timeline(alice, portal))
            assert 10 <= len(before) < HISTORY - DOWN, "the kill came too late"
            # More than the history already in: a new portal's newest messages, read again,
            # would no longer reach back to where the kill interrupted them.
            for i in range(DOWN):
                await slack.post_message(world.carol, general, f"while down {i}")
            await bridge.start()
            await until(alice, portal, lambda b: f"while down {DOWN - 1}" in b,
                        "the messages said while down")
            await slack.post_message(world.bob, general, "live after")
            events = await until(alice, portal, lambda b: "live after" in b, "the live message")
            assert bodies(events) == [f"h{i}" for i in range(HISTORY)] + [
                "live during backfill", *(f"while down {i}" for i in range(DOWN)), "live after"]
            sent = {m.text: m for m in slack.messages(general)}
            for event in events:
                if event.type == EventType.ROOM_MESSAGE:
                    # The original time, to the millisecond.
                    assert event.timestamp == int(float(sent[event.content.body].ts) * 1000)


async def test_a_stop_mid_backfill_keeps_live_messages_after_the_history(start_bridge, new_user,
                                                                         homeserver):
    """A clean stop in the middle: the live message that waited behind the history does not
    jump ahead of the history's rest, which comes after the restart, even when Slack rate
    limits the restarted bridge's rejoining."""
    async with FakeSlack() as slack:
        world = build_world(slack)
        general = world.general
        slack.state.time_offset = -3600
        for i in range(STOPPED_HISTORY):
            await slack.post_message(world.bob, general, f"h{i}")
        slack.state.time_offset = 0
        callback = f"{homeserver.appservice_url}/link/slack/callback"
        extra = {"networks": {"slack": {**slack_settings(slack, callback),
                                        "backfill": {"initial_messages": STOPPED_HISTORY}}},
                 "backfill": {"rate": 4, "burst": 1}}
        bridge = await start_bridge(extra=extra)
        alice = await new_user("alice")
        _, portal = await link_and_map_general(alice, homeserver.bot_mxid, slack, world)
        await until(alice, portal, lambda b: len(b) >= 3, "a first part of the history")
        await slack.post_message(world.carol, general, "live during backfill")
        await slack.wait_until(lambda: not slack.socket.unacked(), "the event acknowledged")
        await bridge.stop()
        assert len(bodies(await timeline(alice, portal))) < STOPPED_HISTORY, "stopped too late"
        # Slack asks the restarted bridge to slow down as it rejoins the channel.
        limited = slack.rate_limit("conversations.list", count=2)
        await start_bridge(extra=extra)
        events = await until(alice, portal, lambda b: "live during backfill" in b,
                             "the live message")
        await slack.post_message(world.bob, general, "live after")
        events = await until(alice, portal, lambda b: "live after" in b, "the last message")
        assert bodies(events) == [f"h{i}" for i in range(STOPPED_HISTORY)] + [
            "live during backfill", "live after"]
        assert limited.remaining == 0
