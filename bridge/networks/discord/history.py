"""A Discord channel's past for the core's backfill and catch-up: the channel's messages
(GET /channels/{id}/messages) and those of its threads (each thread is a channel of its
own; a forum has only threads), merged in time order, read by the bot for a person who may
read the channel.

Requests are made here rather than through discord.py's own client, which sleeps through a
429 by itself: Discord's wait reaches the core as `RateLimited` (the core paces backfill
and asks again), and a bucket Discord said is empty is not asked before it refills. The
messages themselves are parsed by discord.py, so they become the same events as live ones.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import quote

import aiohttp
import attrs
import discord

from ..base import (
    RateLimited,
    RemoteEvent,
    RemoteMessage,
    RemoteReaction,
    RemoteRoom,
    RemoteUser,
)
from ..history import HistoryCursor, HistoryNotReadable, HistoryPage, NoHistory
from .formatting import emoji_key

log = logging.getLogger("relayforge.discord.history")
# Discord's largest page of messages, and of the users who reacted with one emoji.
PAGE = 100
# Threads read per channel and page: the newest ones (archived ones included).
MAX_THREADS = 25


class Events(Protocol):
    """What history needs of the live path: the same conversion of messages and people."""

    threads_seen: set[str]

    async def convert(self, message: discord.Message, *, as_root: bool = False
                      ) -> list[RemoteEvent]: ...

    async def user(self, who: Any, fallback_id: int | None = None) -> RemoteUser: ...


class Reader(Protocol):
    """What history needs of the Discord connector."""

    settings: Mapping[str, Any]
    api_url: str
    sessions: Mapping[str, Any]
    client: discord.Client | None
    events: Events

    @property
    def bot_user_id(self) -> str: ...

    async def _bot_token_refused(self) -> None: ...


class DiscordHistory:
    def __init__(self, connector: Reader) -> None:
        self.c = connector
        self.events: Events = connector.events
        self._http: aiohttp.ClientSession | None = None
        # Per route (its channel): (requests left, when the bucket refills); the global limit.
        self._buckets: dict[str, tuple[int, float]] = {}
        self._global_until = 0.0

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def fetch(self, persona_id: str, room: RemoteRoom, *, after: HistoryCursor | None,
                    not_before_ms: int | None, limit: int) -> HistoryPage:
        channel = await self._readable(persona_id, room)
        floor = _snowflake(not_before_ms) if not_before_ms else 0
        start = None
        if after is not None:
            start = int(after.token) if after.token and after.token.isdigit() else (
                _snowflake(after.ts_ms) - 1)
        sources: list[Any] = [] if isinstance(channel, discord.ForumChannel) else [channel]
        sources += await self._threads(channel)
        found: list[tuple[Any, dict[str, Any]]] = []
        for source in sources:
            if start is None:
                found += [(source, raw) for raw in await self._newest(source, limit, floor)]
            else:
                found += [(source, raw) for raw in await self._after(
                    source, max(start, floor), limit + 1)]
        found.sort(key=lambda item: int(item[1]["id"]))
        more = False
        if start is None:
            found = found[-limit:] if limit > 0 else []
        else:
            more = len(found) > limit
            found = found[:limit]
        log.debug("History of %s after %s (start %s): %d message(s), more %s",
                  room.remote_id, after, start, len(found), more)
        session = self.c.sessions[persona_id]
        # A page that fails half-way (a 429) is read again: the thread roots it would have
        # brought must come with it then.
        threads_seen = set(self.events.threads_seen)
        try:
            events = await self._convert(found, room, session.owner, persona_id)
        except BaseException:
            self.events.threads_seen.clear()
            self.events.threads_seen.update(threads_seen)
            raise
        cursor = None
        if found:
            newest = int(found[-1][1]["id"])
            cursor = HistoryCursor(_ms(newest), str(newest))
        return HistoryPage(tuple(events), cursor, more)

    async def _convert(self, found: list[tuple[Any, dict[str, Any]]], room: RemoteRoom,
                       owner: str, persona_id: str) -> list[RemoteEvent]:
        events: list[RemoteEvent] = []
        seen: set[str] = set()
        for source, raw in found:
            # discord.py's own parsing (its connection state is the channel's).
            message = discord.Message(state=source._state, channel=source,
                                      data=raw)  # type: ignore[arg-type]
            converted = await self.events.convert(message)
            if converted:
                converted += await self._reactions(source, message, raw, room)
            # The person whose rule maps the room reads it: the events are theirs. A
            # thread's root already in the page is not brought again before its replies.
            events += [attrs.evolve(e, receiver=owner, persona_id=persona_id)
                       for e in converted if not (isinstance(e, RemoteMessage)
                                                  and e.message_id in seen)]
            seen.update(e.message_id for e in converted if isinstance(e, RemoteMessage))
        return events

    # ---- who may read what -----------------------------------------------------------------

    async def _readable(self, persona_id: str, room: RemoteRoom) -> Any:
        """The mapped channel, if the person may read its history: a member of its server
        whom its permissions let view it and read its history."""
        session = self.c.sessions.get(persona_id)
        if session is None or self.c.client is None:
            raise ConnectionError("this Discord account's session is not open")
        guild_id, _, channel_id = room.remote_id.partition("/")
        guild = self.c.client.get_guild(int(guild_id)) if guild_id.isdigit() else None
        channel = guild.get_channel(int(channel_id)) if guild and channel_id.isdigit() else None
        if guild is None or not isinstance(channel, discord.TextChannel | discord.ForumChannel):
            raise NoHistory(f"the bot sees no Discord channel {room.remote_id}")
        member = guild.get_member(int(session.user_id))
        if member is None:
            try:
                member = await guild.fetch_member(int(session.user_id))
            except discord.NotFound:
                raise HistoryNotReadable(f"you are not a member of {guild.name}") from None
        rights = channel.permissions_for(member)
        if not (rights.view_channel and rights.read_message_history):
            raise HistoryNotReadable(f"you may not read the history of #{channel.name}")
        return channel

    async def _threads(self, channel: Any) -> list[discord.Thread]:
        """The channel's public threads the bot knows of (the Gateway's active ones) and its
        archived ones, newest first; private threads are their members' only."""
        threads = {t.id: t for t in channel.threads if not t.is_private()}
        data = await self._get(f"/channels/{channel.id}/threads/archived/public",
                               {"limit": "50"}, str(channel.id))
        for raw in (data or {}).get("threads", []):
            thread = discord.Thread(guild=channel.guild, state=channel._state, data=raw)
            threads.setdefault(thread.id, thread)
        return sorted(threads.values(), key=lambda t: t.id, reverse=True)[:MAX_THREADS]

    # ---- reading ---------------------------------------------------------------------------

    async def _newest(self, source: Any, limit: int, floor: int) -> list[dict[str, Any]]:
        """The newest `limit` messages of a channel or thread, newer than `floor`."""
        found: list[dict[str, Any]] = []
        before: int | None = None
        while len(found) < limit:
            query = {"limit": str(min(PAGE, limit - len(found)))}
            if before is not None:
                query["before"] = str(before)
            page = await self._get(f"/channels/{source.id}/messages", query, str(source.id))
            fresh = [raw for raw in page or [] if int(raw["id"]) > floor]
            found += fresh
            if len(fresh) < len(page or []) or len(page or []) < int(query["limit"]):
                break
            before = int(page[-1]["id"])
        return found

    async def _after(self, source: Any, after: int, limit: int) -> list[dict[str, Any]]:
        """The oldest `limit` messages of a channel or thread after the snowflake `after`."""
        found: list[dict[str, Any]] = []
        while len(found) < limit:
            query = {"limit": str(min(PAGE, limit - len(found))), "after": str(after)}
            page = await self._get(f"/channels/{source.id}/messages", query, str(source.id))
            if not page:
                break
            page = sorted(page, key=lambda raw: int(raw["id"]))  # Discord: newest first
            found += page
            if len(page) < int(query["limit"]):
                break
            after = int(page[-1]["id"])
        return found

    async def _reactions(self, source: Any, message: discord.Message, raw: dict[str, Any],
                         room: RemoteRoom) -> list[RemoteEvent]:
        """Who reacted to a message (the bot's own reactions are Matrix people's)."""
        events: list[RemoteEvent] = []
        bot = self.c.bot_user_id
        for reaction in raw.get("reactions") or []:
            emoji = reaction.get("emoji") or {}
            if not emoji.get("name"):
                continue
            partial = discord.PartialEmoji(name=emoji["name"],
                                           id=int(emoji["id"]) if emoji.get("id") else None)
            key = emoji_key(partial)
            path = quote(emoji["name"] if not emoji.get("id")
                         else f"{emoji['name']}:{emoji['id']}")
            users = await self._get(f"/channels/{source.id}/messages/{message.id}/reactions/"
                                    f"{path}", {"limit": str(PAGE)}, str(source.id))
            for user in users or []:
                if str(user["id"]) == bot:
                    continue
                member = message.guild.get_member(int(user["id"])) if message.guild else None
                sender = await self.events.user(member, int(user["id"]))
                if member is None:
                    sender = attrs.evolve(sender, display_name=user.get("global_name")
                                          or user.get("username"))
                events.append(RemoteReaction(
                    room=room, sender=sender, timestamp_ms=_ms(message.id),
                    reaction_id=f"{message.id}:{user['id']}:{key}",
                    target_id=str(message.id), key=key))
        return events

    async def _get(self, path: str, query: dict[str, str], bucket: str) -> Any:
        """One GET as the bot; Discord's refusals as the core understands them."""
        now = time.monotonic()
        if self._global_until > now:
            raise RateLimited(self._global_until - now, "Discord's global rate limit")
        remaining, reset_at = self._buckets.get(bucket, (1, 0.0))
        if remaining <= 0 and reset_at > now:
            raise RateLimited(reset_at - now, "Discord rate limit on reading history")
        if self._http is None:
            self._http = aiohttp.ClientSession()
        headers = {"Authorization": f"Bot {self.c.settings['bot_token']}",
                   "User-Agent": "DiscordBot (RelayForge, 1)"}
        async with self._http.get(f"{self.c.api_url}{path}", params=query,
                                  headers=headers) as r:
            left, reset = (r.headers.get("X-RateLimit-Remaining"),
                           r.headers.get("X-RateLimit-Reset-After"))
            if left is not None and reset is not None:
                try:
                    self._buckets[bucket] = (int(left), time.monotonic() + float(reset))
                except ValueError:
                    pass
            data = await r.json(content_type=None) if r.status != 204 else None
            status = r.status
            retry_header = r.headers.get("Retry-After")
            is_global = r.headers.get("X-RateLimit-Global")
        if status < 300:
            return data
        error = data if isinstance(data, dict) else {}
        if status == 429:
            retry_after = float(error.get("retry_after") or retry_header or 1)
            if error.get("global") or is_global:
                self._global_until = time.monotonic() + retry_after
            self._buckets[bucket] = (0, time.monotonic() + retry_after)
            raise RateLimited(retry_after, "Discord rate limit on reading history")
        if status == 401:
            await self.c._bot_token_refused()
            raise ConnectionError("Discord refused the bridge's bot token")
        if status in (403, 404):
            raise NoHistory(f"the bot may not read the history of Discord channel {bucket} "
                            f"({status}: {error.get('message') or 'refused'}); it needs "
                            "View Channel and Read Message History there")
        raise ConnectionError(f"Discord answered {status} reading history: "
                              f"{error.get('message') or ''}")


def _snowflake(ms: int) -> int:
    return discord.utils.time_snowflake(datetime.fromtimestamp(ms / 1000, UTC))


def _ms(snowflake: int) -> int:
    return int(discord.utils.snowflake_time(snowflake).timestamp() * 1000)
