"""Slack history in Matrix, end to end (the unmodified slack-sdk against the wire-level fake,
real Synapse): a mapped channel's portal starts with its newest messages, in order, with
their original times and senders, threads, edits and reactions; live messages wait until the
history is in; what was said while the bridge was stopped arrives after a restart, once."""

from __future__ import annotations

from mautrix.types import EventType

from tests.fakes.slack import FakeSlack

from .support import slack_history as history
from .support.slack import link_slack
from .support.slack_history import bodies, slack, until_bodies, world

__all__ = ["slack", "world"]  # the Slack fake and its world, as fixtures


def _settings(slack: FakeSlack, homeserver) -> dict:
    return history.history_settings(slack, homeserver, 5, backfill={"notice_threshold": 3})


async def test_history_then_live_then_catch_up_after_a_restart(start_bridge, slack, world,
                                                               new_user, homeserver):
    general = world.general
    # An hour ago: six messages (one too many), a thread reply, an edit and a reaction.
    await history.post_past(slack, general, world.bob, world.carol, "h", more=("h4",))

    bridge = await start_bridge(extra=_settings(slack, homeserver))
    alice = await new_user("alice")
    bot = homeserver.bot_mxid
    room = await link_slack(alice, bot, slack, world.alice)
    # The history's answer waits until a live message was posted meanwhile.
    portal = await history.live_while_history_held(
        slack, lambda: history.ask_to_map_general(alice, room, world), alice, general, world.bob,
        "live during backfill")

    events = await until_bodies(alice, portal, "live during backfill")
    assert bodies(events) == ["h1", "h2", "h3 edited", "t1", "h4", "live during backfill"]
    by_body = history.messages_by_body(events)
    sent = history.sent_by_text(slack, general)
    for body in ("h1", "h2", "t1", "h4"):
        # The original time, to the millisecond, and the author's ghost.
        assert by_body[body].timestamp == int(float(sent[body].ts) * 1000)
        author = slack.state.users[sent[body].user]
        assert by_body[body].sender == bridge.router.ghosts.ghost_mxid(
            "slack", f"{world.team.id}/{author.id}")
    assert by_body["t1"].content.get_thread_parent() == by_body["h1"].event_id
    reaction = next(e for e in events if e.type == EventType.REACTION)
    assert reaction.content.relates_to.event_id == by_body["h1"].event_id
    assert reaction.content.relates_to.key == "👍"
    assert reaction.sender == by_body["h2"].sender  # carol
    await alice.wait_for_notice(room, bot, "The history of #general is in: 5 messages",
                                after=None)

    # Stopped: what is said meanwhile comes after the restart, once and in order.
    await bridge.stop()
    await slack.post_message(world.carol, general, "while away 1")
    await slack.post_message(world.bob, general, "while away 2")
    await start_bridge(extra=_settings(slack, homeserver))
    events = await until_bodies(alice, portal, "while away 2")
    await slack.post_message(world.bob, general, "live again")
    events = await until_bodies(alice, portal, "live again")
    assert bodies(events) == ["h1", "h2", "h3 edited", "t1", "h4", "live during backfill",
                              "while away 1", "while away 2", "live again"]


async def test_a_reply_in_an_old_thread_while_away_comes_in_after_a_restart(
        start_bridge, slack, world, new_user, homeserver):
    general = world.general
    slack.state.time_offset = -3600
    root = await slack.post_message(world.bob, general, "old root")
    await slack.post_message(world.carol, general, "old reply", thread_ts=root.ts)
    await slack.post_message(world.bob, general, "newer top")
    slack.state.time_offset = 0
    bridge = await start_bridge(extra=_settings(slack, homeserver))
    alice = await new_user("alice")
    _, portal = await history.link_and_map_general(alice, homeserver.bot_mxid, slack, world)
    await until_bodies(alice, portal, "newer top")

    # While the bridge is stopped someone answers in the thread, whose root is older than
    # anything since: Slack's channel history lists the root by its own time only.
    await bridge.stop()
    await slack.post_message(world.carol, general, "reply while away", thread_ts=root.ts)
    await slack.post_message(world.bob, general, "top while away")
    await start_bridge(extra=_settings(slack, homeserver))
    await until_bodies(alice, portal, "top while away")
    await slack.post_message(world.bob, general, "live again")
    events = await until_bodies(alice, portal, "live again")
    assert bodies(events) == ["old root", "old reply", "newer top", "reply while away",
                              "top while away", "live again"]
    by_body = history.messages_by_body(events)
    away = by_body["reply while away"]
    assert away.content.get_thread_parent() == by_body["old root"].event_id
    sent = history.sent_by_text(slack, general)
    assert away.timestamp == int(float(sent["reply while away"].ts) * 1000)
    assert away.sender == bridge.router.ghosts.ghost_mxid(
        "slack", f"{world.team.id}/{world.carol.id}")
