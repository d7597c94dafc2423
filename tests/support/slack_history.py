"""Shared steps of the Slack history tests (mapped channels and direct chats): the fake and
its world as fixtures (which the other Slack tests import from here too), a channel's past
posted an hour ago, linking and mapping #general, and a live message posted while the
bridge's first read of the history is held; and reading a portal's timeline as its person
(which the other networks' history tests use too)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from mautrix.types import EventType, PaginationDirection, RelationType

from tests.fakes.slack import FakeSlack
from tests.fakes.slack.models import Channel, Message, User
from tests.fakes.slack.scenario import World, build_world

from .matrix import DEADLINE, MatrixUser
from .slack import link_slack, slack_settings


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as fake:
        yield fake


@pytest.fixture
def world(slack: FakeSlack) -> World:
    return build_world(slack)


def history_settings(slack: FakeSlack, homeserver: Any, initial_messages: int,
                     **extra: Any) -> dict[str, Any]:
    """The bridge config's `extra`: Slack on, pointed at the fake, a new portal starting with
    its newest `initial_messages` messages; `extra` beside it (say a `backfill` section)."""
    callback = f"{homeserver.appservice_url}/link/slack/callback"
    return {"networks": {"slack": {**slack_settings(slack, callback),
                                   "backfill": {"initial_messages": initial_messages}}},
            **extra}


async def post_past(slack: FakeSlack, channel: Channel, first: User, second: User,
                    prefix: str, *, more: tuple[str, ...] = ()) -> tuple[Message, Message]:
    """An hour ago in `channel`: "too old for five" and three messages PREFIX1 (by `first`),
    PREFIX2 (`second`) and PREFIX3 (`first`), a thread reply "t1" to the first (`second`),
    then `more` (`first`), PREFIX3 edited to "PREFIX3 edited" and `second`'s thumbs-up on
    PREFIX1. Returns PREFIX1 and PREFIX3 as posted."""
    slack.state.time_offset = -3600
    await slack.post_message(first, channel, "too old for five")
    one = await slack.post_message(first, channel, f"{prefix}1")
    await slack.post_message(second, channel, f"{prefix}2")
    three = await slack.post_message(first, channel, f"{prefix}3")
    await slack.post_message(second, channel, "t1", thread_ts=one.ts)
    for text in more:
        await slack.post_message(first, channel, text)
    await slack.edit_message(first, channel, three.ts, f"{prefix}3 edited")
    await slack.add_reaction(second, channel, one.ts, "thumbsup")
    slack.state.time_offset = 0
    return one, three


async def ask_to_map_general(user: MatrixUser, room: str, world: World) -> None:
    """`map` #general of the world's workspace, said in the management room `room`."""
    await user.send_text(room, f"map slack {world.team.id}/#general --profile Jobb")


async def map_general(user: MatrixUser, room: str, world: World) -> str:
    """`map` #general (`ask_to_map_general`): the portal `user` is invited to (and joins)."""
    await ask_to_map_general(user, room, world)
    return await user.wait_for_invite()


async def link_and_map_general(user: MatrixUser, bot: str, slack: FakeSlack,
                               world: World) -> tuple[str, str]:
    """`user` links alice's Slack account and maps #general: (management room, portal)."""
    room = await link_slack(user, bot, slack, world.alice)
    return room, await map_general(user, room, world)


async def live_while_history_held(slack: FakeSlack, open_portal: Callable[[], Awaitable[Any]],
                                  user: MatrixUser, channel: Channel, author: User,
                                  text: str) -> str:
    """The bridge's first answer from conversations.history is held while `open_portal`
    makes a portal (a map asked for, a first message) and `author` posts `text` in `channel`:
    returns the portal `user` was invited to (and joined)."""
    hold = slack.hold_after("conversations.history", 1)
    await open_portal()
    portal = await user.wait_for_invite()
    async with asyncio.timeout(DEADLINE):
        await hold.reached.wait()
    await slack.post_message(author, channel, text)
    hold.release()
    return portal


async def timeline(user: MatrixUser, room: str) -> list:
    """Every message and reaction in the room, oldest first."""
    events, token = [], None
    while True:
        page = await user.client.get_messages(room, PaginationDirection.FORWARD,
                                              from_token=token, limit=500)
        events += [e for e in page.events
                   if e.type in (EventType.ROOM_MESSAGE, EventType.REACTION)]
        if not page.events or page.end is None or page.end == token:
            return events
        token = page.end


def bodies(events: list) -> list[str]:
    """The bodies of the messages among `events`, in their order; edits left out."""
    return [e.content.body for e in events if e.type == EventType.ROOM_MESSAGE
            and e.content.relates_to.rel_type != RelationType.REPLACE]


async def until_bodies(user: MatrixUser, room: str, last: str) -> list:
    """The room's `timeline` once a message with the body `last` is in it (polled)."""
    async with asyncio.timeout(DEADLINE):
        while True:
            events = await timeline(user, room)
            if last in bodies(events):
                return events
            await asyncio.sleep(0.2)


def messages_by_body(events: list) -> dict[str, Any]:
    """The room's messages by their body."""
    return {e.content.body: e for e in events if e.type == EventType.ROOM_MESSAGE}


def sent_by_text(slack: FakeSlack, channel: Channel) -> dict[str, Message]:
    """The channel's messages on Slack by their text."""
    return {m.text: m for m in slack.messages(channel)}
