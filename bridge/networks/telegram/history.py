"""A Telegram chat's past for the core's backfill and catch-up: messages.getHistory with
the person's own session, so only chats they can read; pages by message id. A private chat
is read in the person's own numbering of its messages (the ids live bridging uses).

FLOOD_WAIT becomes `RateLimited` for the core to wait out (the client never sleeps on it),
a chat the person left or was banned from is `HistoryNotReadable`. Messages become the same
events as live ones (topic roots, replies, media, the latest edit), with their reactions.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from telethon import errors
from telethon.tl import types

from ..base import RemoteEvent, RemoteRoom
from ..history import HistoryCursor, HistoryNotReadable, HistoryPage

log = logging.getLogger("relayforge.telegram.history")
T = TypeVar("T")
# Refusals meaning this person may not read the chat (any more).
NOT_READABLE = (errors.ChannelPrivateError, errors.ChannelInvalidError,
                errors.ChatForbiddenError, errors.PeerIdInvalidError,
                errors.UserBannedInChannelError, errors.ChatIdInvalidError)


class Events(Protocol):
    """What history needs of the live path: the same conversion of messages, reactions."""

    async def convert(self, session: Any, message: Any) -> list[RemoteEvent]: ...

    async def reaction_events(self, session: Any, room: RemoteRoom, msg_id: int,
                              reactions: Any, timestamp_ms: int | None = None
                              ) -> list[RemoteEvent]: ...


class Reader(Protocol):
    """What history needs of the Telegram connector: the person's session, their chats,
    and one request as them with Telegram's refusals translated."""

    events: Events

    def session_for(self, persona_id: str | None) -> Any: ...

    async def _peer(self, session: Any, remote_room_id: str) -> Any: ...

    async def call(self, session: Any, action: Callable[[], Awaitable[T]], what: str
                   ) -> T: ...


class TelegramHistory:
    def __init__(self, connector: Reader) -> None:
        self.c = connector

    async def fetch(self, persona_id: str, room: RemoteRoom, *, after: HistoryCursor | None,
                    not_before_ms: int | None, limit: int) -> HistoryPage:
        session = self.c.session_for(persona_id)
        own, private, _ = room.remote_id.partition(":")
        if private and own != str(session.user_id):
            # A private chat ("<own id>:<other id>") is read only by the account it is of.
            raise HistoryNotReadable(f"{room.remote_id} is another account's private chat")
        try:
            peer = await self.c._peer(session, room.remote_id)
            found = await self.c.call(session, lambda: self._read(
                session, peer, after, not_before_ms, limit + (after is not None)),
                "reading history")
        except ValueError as e:  # Telethon: no such chat among the person's
            raise HistoryNotReadable(f"{room.remote_id} is not among your chats") from e
        except NOT_READABLE as e:
            raise HistoryNotReadable(f"you may not read {room.remote_id} ({e})") from e
        more = after is not None and len(found) > limit
        found = found[:limit] if after is not None else found
        # Files are downloaded as the person too: a FLOOD_WAIT there is the core's to wait.
        events = await self.c.call(session, lambda: self._convert(session, found),
                                   "reading history")
        cursor = None
        if found:
            newest = found[-1]
            cursor = HistoryCursor(int(newest.date.timestamp() * 1000), str(newest.id))
        return HistoryPage(tuple(events), cursor, more)

    async def _convert(self, session: Any, found: list[Any]) -> list[RemoteEvent]:
        # A page that fails half-way (a FLOOD_WAIT) is read again: the topic roots and
        # reactions it would have brought must come with it then.
        topics_seen, reactions = set(session.topics_seen), dict(session.reactions)
        try:
            return await self._events(session, found)
        except BaseException:
            session.topics_seen, session.reactions = topics_seen, reactions
            raise

    async def _events(self, session: Any, found: list[Any]) -> list[RemoteEvent]:
        events: list[RemoteEvent] = []
        for message in found:
            if not isinstance(message, types.Message):
                continue  # a topic opened, someone joined: not messages people wrote
            converted = await self.c.events.convert(session, message)
            if converted and message.reactions:
                last = converted[-1]
                converted += await self.c.events.reaction_events(
                    session, last.room, message.id, message.reactions, last.timestamp_ms)
            events += converted
        return events

    async def _read(self, session: Any, peer: Any, after: HistoryCursor | None,
                    not_before_ms: int | None, limit: int) -> list[Any]:
        """Oldest first: the newest `limit` messages (no cursor), or the oldest `limit`
        after the cursor; none older than `not_before_ms`."""
        floor = datetime.fromtimestamp(not_before_ms / 1000, UTC) if not_before_ms else None
        client = session.client
        if after is None:
            newest = []
            async for message in client.iter_messages(peer, limit=limit):
                if floor is not None and message.date < floor:
                    break
                newest.append(message)
            return newest[::-1]
        found = []
        if after.token and after.token.isdigit():
            pages = client.iter_messages(peer, limit=limit, min_id=int(after.token),
                                         reverse=True)
        else:
            pages = client.iter_messages(
                peer, limit=limit, reverse=True,
                offset_date=datetime.fromtimestamp(after.ts_ms / 1000, UTC))
        async for message in pages:
            if floor is None or message.date >= floor:
                found.append(message)
        return found
