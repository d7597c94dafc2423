"""Event payloads in Slack's shapes, and the router that wraps them in `event_callback`s for
each app installed where they happened and hands them, in order, to Socket Mode or HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .models import Channel, Message, SlackApp, Team, Token, User
from .render import message_json, user_json

if TYPE_CHECKING:
    from .state import SlackState

# ---- event bodies (the `event` inside an event_callback) ------------------------------------


def snapshot(message: Message, channel: Channel, base: str) -> dict[str, Any]:
    """A message as it stood, for `previous_message`."""
    return message_json(message, channel, base)


def message_event(message: Message, channel: Channel, base: str) -> dict[str, Any]:
    body = message_json(message, channel, base)
    body.update(channel=channel.id, event_ts=message.ts, channel_type=channel.channel_type)
    if message.reply_broadcast and message.thread_ts:
        parent = channel.find(message.thread_ts)
        if parent is not None:
            body["root"] = message_json(parent, channel, base)
    return body


def message_changed(message: Message, previous: dict[str, Any], channel: Channel,
                    event_ts: str, base: str) -> dict[str, Any]:
    current = message_json(message, channel, base)
    current.update(source_team=message.team_id, user_team=message.team_id)
    if message.subtype == "tombstone":
        current["hidden"] = True
    return {"type": "message", "subtype": "message_changed", "message": current,
            "previous_message": previous, "channel": channel.id, "hidden": True,
            "ts": event_ts, "event_ts": event_ts, "channel_type": channel.channel_type}


def message_deleted(previous: dict[str, Any], channel: Channel, event_ts: str
                    ) -> dict[str, Any]:
    return {"type": "message", "subtype": "message_deleted", "hidden": True,
            "deleted_ts": previous["ts"], "channel": channel.id,
            "previous_message": previous, "ts": event_ts, "event_ts": event_ts,
            "channel_type": channel.channel_type}


def reaction_event(user: User, message: Message, channel: Channel, name: str, *, added: bool,
                   event_ts: str) -> dict[str, Any]:
    return {"type": "reaction_added" if added else "reaction_removed", "user": user.id,
            "reaction": name, "item_user": message.user,
            "item": {"type": "message", "channel": channel.id, "ts": message.ts},
            "event_ts": event_ts}


def member_joined(user: User, channel: Channel, event_ts: str) -> dict[str, Any]:
    return {"type": "member_joined_channel", "user": user.id, "channel": channel.id,
            "channel_type": "C" if channel.kind == "public" else "G",
            "team": channel.team.id, "event_ts": event_ts}


def user_change(user: User, base: str, event_ts: str) -> dict[str, Any]:
    return {"type": "user_change", "user": user_json(user, base), "cache_ts": user.updated,
            "event_ts": event_ts}


# ---- routing ---------------------------------------------------------------------------------

Deliver = Callable[[SlackApp, dict[str, Any]], Awaitable[None]]


class EventRouter:
    """One ordered queue per app, so events reach an app in the order they happened, while
    Web API handlers never wait for a delivery (Slack answers and delivers independently)."""

    def __init__(self, state: SlackState, deliver: Deliver) -> None:
        self.state = state
        self.deliver = deliver
        # Every event_callback produced, per app, for assertions ("what did Slack send?").
        self.sent: list[dict[str, Any]] = []
        self._queues: dict[str, asyncio.Queue[tuple[SlackApp, dict[str, Any],
                                                    asyncio.Future[Any]]]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}

    def callback(self, app: SlackApp, team: Team, event: dict[str, Any], token: Token
                 ) -> dict[str, Any]:
        enterprise = team.enterprise
        assert token.user is not None
        payload: dict[str, Any] = {
            "token": app.verification_token, "team_id": team.id,
            "context_team_id": team.id,
            "context_enterprise_id": enterprise.id if enterprise else None,
            "api_app_id": app.id, "event": event, "type": "event_callback",
            "event_id": "Ev" + secrets.token_hex(5).upper(),
            "event_time": int(self.state.now()),
            "authorizations": [{
                "enterprise_id": enterprise.id if enterprise else None,
                "team_id": None if token.enterprise_install else team.id,
                "user_id": token.user.id, "is_bot": False,
                "is_enterprise_install": token.enterprise_install}],
            "is_ext_shared_channel": False,
            "event_context": "4-" + secrets.token_urlsafe(24),
        }
        if enterprise is not None:
            payload["enterprise_id"] = enterprise.id
        return payload

    def emit(self, team: Team, event: dict[str, Any], *, channel: Channel | None = None,
             only_app: SlackApp | None = None, authorizing: Token | None = None
             ) -> list[asyncio.Future[Any]]:
        futures: list[asyncio.Future[Any]] = []
        for app in list(self.state.apps.values()):
            if only_app is not None and app is not only_app:
                continue
            if app.event_types is not None and event["type"] not in app.event_types:
                continue
            token = authorizing
            if token is None:
                # Slack delivers to an app installed in the workspace, on behalf of one
                # authorizing person who can see the conversation.
                candidates = [t for t in self.state.installations(team) if t.app is app]
                if channel is not None:
                    candidates = [t for t in candidates
                                  if t.user is not None and t.user.id in channel.members]
                if not candidates:
                    continue
                token = candidates[0]
            payload = self.callback(app, team, event, token)
            self.sent.append(payload)
            futures.append(self._enqueue(app, payload))
        return futures

    def _enqueue(self, app: SlackApp, payload: dict[str, Any]) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        queue = self._queues.get(app.id)
        if queue is None:
            queue = self._queues[app.id] = asyncio.Queue()
            self._workers[app.id] = asyncio.create_task(self._work(queue))
        queue.put_nowait((app, payload, future))
        return future

    async def _work(self, queue: asyncio.Queue[tuple[SlackApp, dict[str, Any],
                                                     asyncio.Future[Any]]]) -> None:
        while True:
            app, payload, future = await queue.get()
            try:
                await self.deliver(app, payload)
                if not future.done():
                    future.set_result(None)
            except Exception as exc:  # a delivery failure must not stop later events
                if not future.done():
                    future.set_exception(exc)
                    # Nobody may await a Web API echo's future; don't warn about it.
                    future.exception()
            finally:
                queue.task_done()

    async def settle(self) -> None:
        """Wait until every event emitted so far has been handed to its transport."""
        for queue in list(self._queues.values()):
            await queue.join()

    async def close(self) -> None:
        for task in self._workers.values():
            task.cancel()
        for task in self._workers.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._workers.clear()
        self._queues.clear()
