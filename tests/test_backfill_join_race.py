"""Live messages said while a channel is being joined and its portal made, before its history
comes in, land after that history (real Synapse, the Slack fake): the network reports a
joined channel's events at once, but the portal's history goes first."""

from __future__ import annotations

import asyncio

from tests.fakes.slack import FakeSlack
from tests.fakes.slack.scenario import World, build_world

from .support.matrix import DEADLINE
from .support.slack import link_slack, slack_settings
from .support.slack_history import bodies, until_bodies


async def test_a_message_said_while_the_channel_is_joined_lands_after_its_history(
        start_bridge, new_user, homeserver):
    async with FakeSlack() as slack:
        world: World = build_world(slack)
        general = world.general
        slack.state.time_offset = -3600
        for i in range(5):
            await slack.post_message(world.bob, general, f"h{i}")
        slack.state.time_offset = 0
        callback = f"{homeserver.appservice_url}/link/slack/callback"
        await start_bridge(extra={"networks": {"slack": {
            **slack_settings(slack, callback), "backfill": {"initial_messages": 10}}}})
        alice = await new_user("alice")
        room = await link_slack(alice, homeserver.bot_mxid, slack, world.alice)
        # The join has begun (the channel is the bridge's now) and waits for the channel's
        # details, before its portal exists.
        hold = slack.hold_after("conversations.info", 1)
        await alice.send_text(room, f"map slack {world.team.id}/#general --profile Jobb")
        async with asyncio.timeout(DEADLINE):
            await hold.reached.wait()
        await slack.post_message(world.carol, general, "said while joining")
        # Once the bridge has acknowledged it, it has taken it in.
        await slack.wait_until(lambda: not slack.socket.unacked(), "the event acknowledged")
        hold.release()
        portal = await alice.wait_for_invite()
        events = await until_bodies(alice, portal, "said while joining")
        assert bodies(events) == ["h0", "h1", "h2", "h3", "h4", "said while joining"]
        await slack.post_message(world.bob, general, "live after")
        events = await until_bodies(alice, portal, "live after")
        assert bodies(events) == ["h0", "h1", "h2", "h3", "h4", "said while joining",
                                  "live after"]
