"""A Slack channel's past for the core's backfill: conversations.history for the channel's
timeline, conversations.replies for each thread in it, read with the person's own token.
Direct and group messages (D..., G... conversations) are read the same way.

Catching up, a thread whose root is older than the cursor is found by its root's
`latest_reply` (conversations.history lists a root by its own ts only), looking back over
the roots before the cursor within the backfill's age limit, at most `_OLD_ROOTS` of them."""

from __future__ import annotations

from typing import Any, Protocol

from slack_sdk.errors import SlackApiError

from ..base import RemoteEvent, RemoteReaction, RemoteRoom
from ..history import HistoryCursor, HistoryNotReadable, HistoryPage
from .emoji import shortcode_to_unicode
from .events import MESSAGE_SUBTYPES, SlackEvents
from .session import SlackSession

# Refusals that mean this person may not read the channel (not that Slack is down).
_NOT_READABLE = ("channel_not_found", "not_in_channel", "missing_scope", "access_denied",
                 "is_archived")
# The most messages read from Slack for one page (history is paged 200 at a time).
_MOST = 1000
# The most top-level messages before a catch-up's cursor looked at for newer thread replies.
_OLD_ROOTS = 1000


class SlackCalls(Protocol):
    async def call(self, session: SlackSession, method: str, **params: Any) -> Any: ...


class SlackHistory:
    def __init__(self, slack: SlackCalls, events: SlackEvents) -> None:
        self.slack = slack
        self.events = events

    async def page(self, session: SlackSession, room: RemoteRoom, *,
                   after: HistoryCursor | None, not_before_ms: int | None, limit: int
                   ) -> HistoryPage:
        channel = room.remote_id.partition("/")[2]
        oldest = _oldest(after, not_before_ms)
        try:
            messages = await self._read(session, channel, oldest, newest_only=after is None,
                                        limit=limit)
            if after is not None and oldest is not None:
                messages += await self._old_threads(session, channel, oldest,
                                                    _oldest(None, not_before_ms))
        except SlackApiError as e:
            error = e.response.get("error")
            if error in _NOT_READABLE:
                raise HistoryNotReadable(f"Slack refused the history of {channel} ({error})"
                                         ) from e
            raise
        messages.sort(key=lambda m: float(m["ts"]))
        more = False
        if after is None:
            messages = messages[-limit:]  # the newest, oldest first
        elif len(messages) > limit:
            messages, more = messages[:limit], True
        events: list[RemoteEvent] = []
        for message in messages:
            events += await self._events(session, channel, message)
        cursor = (HistoryCursor(int(float(messages[-1]["ts"]) * 1000), messages[-1]["ts"])
                  if messages else None)
        return HistoryPage(tuple(events), cursor, more)

    async def _read(self, session: SlackSession, channel: str, oldest: str | None, *,
                    newest_only: bool, limit: int) -> list[dict[str, Any]]:
        """The channel's messages after `oldest` with their threads' replies (Slack answers
        newest first; a new portal needs only the newest `limit` top-level ones)."""
        found: list[dict[str, Any]] = []
        cursor = None
        top_level = 0
        while len(found) < _MOST:
            params: dict[str, Any] = {"channel": channel, "limit": 200, "cursor": cursor}
            if oldest:
                params["oldest"] = oldest
            page = await self.slack.call(session, "conversations.history", **params)
            for message in page.get("messages") or []:
                if not _is_message(message):
                    continue
                found.append(message)
                top_level += 1
                if message.get("reply_count") and message.get("thread_ts") == message["ts"]:
                    found += await self._replies(session, channel, message["ts"], oldest)
            cursor = (page.get("response_metadata") or {}).get("next_cursor")
            if not cursor or (newest_only and top_level >= limit):
                break
        return found

    async def _old_threads(self, session: SlackSession, channel: str, oldest: str,
                           floor: str | None) -> list[dict[str, Any]]:
        """Replies after `oldest` in threads whose root is at or before it: the roots back
        from `oldest` (to `floor`, the age limit) whose `latest_reply` is newer."""
        found: list[dict[str, Any]] = []
        cursor = None
        looked = 0
        while looked < _OLD_ROOTS:
            # Inclusive: the cursor's own message may be a root replied to since.
            params: dict[str, Any] = {"channel": channel, "limit": 200, "cursor": cursor,
                                      "latest": oldest, "inclusive": True}
            if floor:
                params["oldest"] = floor
            page = await self.slack.call(session, "conversations.history", **params)
            for message in page.get("messages") or []:
                looked += 1
                if (_is_message(message) and message.get("thread_ts") == message["ts"]
                        and float(message.get("latest_reply") or 0) > float(oldest)):
                    found += await self._replies(session, channel, message["ts"], oldest)
            cursor = (page.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                break
        return found

    async def _replies(self, session: SlackSession, channel: str, thread: str,
                       oldest: str | None) -> list[dict[str, Any]]:
        replies: list[dict[str, Any]] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"channel": channel, "ts": thread, "limit": 200,
                                      "cursor": cursor}
            if oldest:
                params["oldest"] = oldest
            page = await self.slack.call(session, "conversations.replies", **params)
            replies += [m for m in page.get("messages") or []
                        if m["ts"] != thread and _is_message(m)
                        # Also sent to the channel: the history has it already.
                        and m.get("subtype") != "thread_broadcast"]
            cursor = (page.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                return replies

    async def _events(self, session: SlackSession, channel: str, message: dict[str, Any]
                      ) -> list[RemoteEvent]:
        """What live bridging would have made of it (the text as last edited), and its
        reactions."""
        team = session.team
        events = await self.events.message_events(session, team, channel,
                                                  {**message, "channel": channel})
        if not events:
            return events
        room = events[0].room
        for reaction in message.get("reactions") or []:
            name = reaction.get("name", "")
            for user in reaction.get("users") or []:
                events.append(RemoteReaction(
                    room=room, sender=await self.events.user(session, team, user),
                    receiver=session.owner, persona_id=session.persona_id,
                    timestamp_ms=events[0].timestamp_ms,
                    reaction_id=f"{message['ts']}:{user}:{name}", target_id=message["ts"],
                    key=shortcode_to_unicode(name) or f":{name}:"))
        return events


def _is_message(message: dict[str, Any]) -> bool:
    return message.get("subtype") in MESSAGE_SUBTYPES and bool(message.get("user"))


def _oldest(after: HistoryCursor | None, not_before_ms: int | None) -> str | None:
    """Slack's `oldest` bound (exclusive): the cursor's own ts when it has one."""
    if after is not None:
        if after.token:
            return after.token
        return f"{max(after.ts_ms, not_before_ms or 0) / 1000:.6f}"
    return f"{not_before_ms / 1000:.6f}" if not_before_ms else None
