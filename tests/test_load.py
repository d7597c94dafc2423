"""Load, for correctness: many Slack channels mapped for one linked person, messages in both
directions in all of them at once, through the unmodified slack-sdk and the wire-level Slack
fake, on the real Synapse. Nothing may be lost, nothing duplicated (an echo of the person's own
message counts as a duplicate), and each room keeps its order. The full-size run with its
latencies is `python -m bench.load`; nothing here is timed."""

from __future__ import annotations

import pytest

from bench.matrix import RawClient

from .support.load import (
    MatrixSide,
    SlackSide,
    both_ways,
    count,
    map_channels,
    matrix_sender,
    slack_sender,
    warm_up,
)
from .support.slack import link_slack, slack_settings
from .support.slack_history import slack, world

__all__ = ["slack", "world"]  # the Slack fake and its world, as fixtures

ROOMS = 30
MESSAGES = 10


@pytest.fixture
async def slack_bridge(start_bridge, slack, homeserver):
    callback = f"{homeserver.appservice_url}/link/slack/callback"
    return await start_bridge(extra={"networks": {"slack": slack_settings(slack, callback)}})


async def test_both_directions_at_once_arrive_once_and_in_order(slack_bridge, slack, world,
                                                                new_user, homeserver):
    alice = await new_user("alice")
    bot = homeserver.bot_mxid
    room = await link_slack(alice, bot, slack, world.alice)
    await alice.send_text(room, f"map slack {world.team.id}/* --profile Jobb")
    await alice.wait_for_notice(room, bot, "will be mapped")

    client = RawClient(homeserver.synapse.url, alice.client.api.token, None, 200)
    matrix = MatrixSide(client)
    remote = SlackSide(slack, world.alice)
    try:
        await client.whoami()
        await matrix.start()
        await remote.start()
        lanes = await map_channels(slack, world.team, world.alice, world.bob, matrix, ROOMS)
        assert len({lane.portal for lane in lanes}) == ROOMS  # one portal per channel
        remote.watch([lane.channel for lane in lanes])
        await warm_up(slack, world.bob, client, matrix, remote, lanes)

        burst = await both_ways(ROOMS, MESSAGES, slack_sender(slack, world.bob, lanes),
                                matrix_sender(client, lanes))
        # Each end has seen everything before it is read back in full.
        await matrix.visible.wait(burst.all_to_matrix(), 300)
        await remote.visible.wait(burst.all_to_remote(), 300)
        # One more message each way per room, waited for: a late echo or copy of the burst
        # would come before it in its room, so the read-back below cannot miss it.
        await warm_up(slack, world.bob, client, matrix, remote, lanes)
        counted = await count(client, lanes, burst, world.alice, alice.mxid)
    finally:
        await remote.stop()
        await matrix.stop()
        await client.close()

    for direction in ("to_matrix", "to_remote"):
        assert {k: counted[direction][k] for k in ("expected", "lost", "duplicated", "stray")
                } == {"expected": ROOMS * MESSAGES, "lost": 0, "duplicated": 0, "stray": 0}, (
            direction, counted[direction])
    # Each channel's messages in the order they were posted, on both sides (slack-sdk hands
    # every Socket Mode event over as its own task; the connector keeps a lane per channel).
    assert counted["to_remote"]["out_of_order"] == 0, counted["to_remote"]
    assert counted["to_matrix"]["out_of_order"] == 0, counted["to_matrix"]
