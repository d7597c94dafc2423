"""Gateway events (through discord.py) as the bridge's neutral remote events.

Only channels a rule mapped come into Matrix. Messages in threads and forum posts go to their
channel's room as Matrix threads; a thread's first message (the message it was opened on, or
a forum post's opening message) is brought over first when the thread is first seen, so
threads that existed before the channel was mapped still have a root. What the bridge's own
webhooks and bot did is recognised and never bridged back."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Coroutine
from typing import TYPE_CHECKING, Any

import discord

from ...core.media import MediaRefused
from ..base import (
    Attachment,
    RemoteEdit,
    RemoteEvent,
    RemoteInvite,
    RemoteMessage,
    RemoteProfile,
    RemoteReaction,
    RemoteRedaction,
    RemoteRoom,
    RemoteTyping,
    RemoteUser,
    Workspace,
)
from .formatting import Formatted, discord_to_matrix, emoji_key

if TYPE_CHECKING:
    from .connector import DiscordConnector

log = logging.getLogger("relayforge.discord.events")



class DiscordEvents:
    def __init__(self, connector: DiscordConnector) -> None:
        self.c = connector
        self.first_ready = asyncio.Event()
        # Who wrote a message (Discord's delete events do not say), and the last message
        # seen in each mapped channel (for catching up after an invalid session).
        self.authors: OrderedDict[str, str] = OrderedDict()
        self.last_seen: dict[str, int] = {}
        self._lost_at: dict[str, int] = {}
        self.deleting: set[str] = set()
        # Threads whose root is in Matrix (or on its way there).
        self.threads_seen: set[str] = set()
        self._avatars: dict[str, Attachment | None] = {}
        # From a lost Gateway connection until it is resumed, or until a fresh session's
        # catch-up has begun: what the Gateway brings waits here, so it lands after the
        # history of the outage rather than before it.
        self._held: list[RemoteEvent] | None = None
        self._queue: asyncio.Queue[Coroutine[Any, Any, None]] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None

    def in_order(self, work: Coroutine[Any, Any, None]) -> None:
        """Handle a Gateway event after those before it (called in the order they came)."""
        self._queue.put_nowait(work)
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._work(), name="discord events")

    async def _work(self) -> None:
        while True:
            work = await self._queue.get()
            await self.guarded(work)

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        while not self._queue.empty():
            self._queue.get_nowait().close()

    async def guarded(self, work: Awaitable[None]) -> None:
        try:
            await work
        except Exception:
            log.exception("A Discord event was not bridged")

    async def _emit(self, event: RemoteEvent) -> None:
        if self._held is not None:
            self._held.append(event)
            return
        await self._send(event)

    async def _send(self, event: RemoteEvent) -> None:
        assert self.c.sink is not None
        await self.c.sink.handle_remote_event(event)

    async def _release(self) -> None:
        """Send what waited, in order, and what arrives meanwhile after it."""
        while self._held:
            waiting, self._held = self._held, []
            for event in waiting:
                await self.guarded(self._send(event))
        self._held = None

    async def resumed(self) -> None:
        """The session was resumed: Discord replayed what was missed; nothing to catch up."""
        await self._release()

    def remember_author(self, message_id: str, author_id: str) -> None:
        self.authors[message_id] = author_id
        while len(self.authors) > 20000:
            self.authors.popitem(last=False)

    async def ready(self) -> None:
        if not self.first_ready.is_set():
            self.first_ready.set()
            for session in list(self.c.sessions.values()):
                await self.offer_channels(session)
            return
        # A fresh session after an invalid one: nothing was replayed, so each mapped
        # channel's history since the last message seen is read (the core drops what it
        # has), by the core's backfill where it has one: as each mapping persona, paced,
        # with live messages held until the channel has caught up.
        log.info("New Discord session: catching up %d mapped channel(s)", len(self.c.mapped))
        gap = getattr(self.c.sink, "history_gap", None)
        if gap is not None:
            rooms: dict[str, list[str]] = {}
            for channel_id, personas in list(self.c.mapped.items()):
                channel = self.c.client.get_channel(int(channel_id)) if self.c.client else None
                persona = next((p for p in personas if p in self.c.sessions), None)
                if channel is not None and persona is not None:
                    rooms.setdefault(persona, []).append(self.room(channel).remote_id)
            for persona, remote_ids in rooms.items():
                await self.guarded(gap(persona, remote_ids))
            await self._release()  # behind the catch-up, at each portal's gate
            return
        for channel_id in list(self.c.mapped):
            last = self._lost_at.get(channel_id, self.last_seen.get(channel_id))
            channel = self.c.client.get_channel(int(channel_id)) if self.c.client else None
            if last and isinstance(channel, discord.TextChannel):
                await self.guarded(self.catch_up(channel, discord.Object(last)))
        await self._release()

    async def offer_channels(self, session: Any, guild: discord.Guild | None = None) -> None:
        """Pattern rules (`GUILD_ID/*`) map channels the way invites map rooms elsewhere:
        each text and forum channel of the servers the person is on (or of `guild`) is
        offered to the core, which maps those a pattern rule of the person covers."""
        if self.c.client is None or not self.first_ready.is_set():
            return
        for server in [guild] if guild else list(self.c.client.guilds):
            member = server.get_member(int(session.user_id))
            if member is None:
                continue
            for channel in server.channels:
                if isinstance(channel, discord.TextChannel | discord.ForumChannel) and (
                        session.persona_id not in self.c.mapped.get(str(channel.id), [])
                        ) and channel.permissions_for(member).view_channel:
                    await self.guarded(self._emit(RemoteInvite(
                        room=self.room(channel), sender=RemoteUser(session.user_id),
                        receiver=session.owner, persona_id=session.persona_id)))

    async def disconnected(self) -> None:
        """The Gateway connection went away: remember where each channel was, since
        messages of a fresh session may arrive before its ready (and move `last_seen`), and
        hold what comes until it is known whether anything was missed."""
        self._lost_at = dict(self.last_seen)
        if self.first_ready.is_set() and self._held is None:
            self._held = []

    async def catch_up(self, channel: discord.TextChannel, after: discord.abc.Snowflake
                       ) -> None:
        async for message in channel.history(after=after, oldest_first=True, limit=200):
            for event in await self.convert(message):
                await self.guarded(self._send(event))

    # ---- where and who ----------------------------------------------------------------------

    def room(self, channel: Any) -> RemoteRoom:
        # Its server is the workspace: a profile's channels of one server share a sub-space.
        return RemoteRoom(f"{channel.guild.id}/{channel.id}", name=f"#{channel.name}",
                          topic=getattr(channel, "topic", None) or None,
                          workspace=Workspace(str(channel.guild.id), channel.guild.name))

    def _bridged(self, channel: Any) -> tuple[Any, str | None] | None:
        """(the mapped channel, the thread) a message there belongs to, or None."""
        if isinstance(channel, discord.Thread):
            parent = channel.parent
            if parent is not None and str(parent.id) in self.c.mapped:
                return parent, str(channel.id)
            return None
        if channel is not None and str(channel.id) in self.c.mapped:
            return channel, None
        return None

    def _receiver(self, channel_id: str) -> tuple[str | None, str | None]:
        for persona_id in self.c.mapped.get(channel_id, []):
            session = self.c.sessions.get(persona_id)
            if session is not None:
                return session.owner, persona_id
        return None, None

    async def user(self, who: discord.abc.User | None, fallback_id: int | None = None
                   ) -> RemoteUser:
        if who is None:
            return RemoteUser(str(fallback_id))
        avatar = None
        if who.avatar is not None or getattr(who, "guild_avatar", None) is not None:
            picture = who.display_avatar
            avatar = self._avatars.get(picture.key)
            if picture.key not in self._avatars:
                try:
                    fetched = await self.c.fetch_media(picture.url)
                    avatar = Attachment("avatar.png", fetched.mimetype, fetched.data)
                except MediaRefused as e:
                    log.info("No avatar for Discord user %s: %s", who.id, e)
                self._avatars[picture.key] = avatar
        # The name people see on that server: the nickname, else the global display name.
        return RemoteUser(str(who.id), display_name=who.display_name, avatar=avatar)

    def _resolvers(self, guild: discord.Guild | None) -> tuple[Any, Any, Any]:
        assert self.c.sink is not None
        sink = self.c.sink

        def users(uid: str) -> tuple[str, str] | None:
            member = guild.get_member(int(uid)) if guild else None
            if member is None:
                return None
            return sink.ghost_mxid(uid), member.display_name

        def roles(rid: str) -> str | None:
            role = guild.get_role(int(rid)) if guild else None
            return role.name if role else None

        def channels(cid: str) -> str | None:
            channel = guild.get_channel_or_thread(int(cid)) if guild else None
            return channel.name if channel else None

        return users, roles, channels

    def _format(self, message: discord.Message, text: str) -> Formatted:
        return discord_to_matrix(text, *self._resolvers(message.guild))

    # ---- messages ---------------------------------------------------------------------------

    def _is_ours(self, message: discord.Message) -> bool:
        if message.webhook_id is not None and str(message.webhook_id) in self.c.webhooks.ids:
            return True
        return self.c.client is not None and message.author.id == self.c.client.user.id

    async def message(self, message: discord.Message, *, as_root: bool = False) -> None:
        for event in await self.convert(message, as_root=as_root):
            await self._emit(event)

    async def convert(self, message: discord.Message, *, as_root: bool = False
                      ) -> list[RemoteEvent]:
        """A Discord message as the events it makes in Matrix (its text, then each file;
        first its thread's root if the thread is new here), or none if it is not bridged.
        The live path emits them; history returns them to the core."""
        events: list[RemoteEvent] = []
        if isinstance(message.channel, discord.PartialMessageable) and message.guild:
            # A thread the Gateway never announced (it was archived, or opened before the
            # bot could see it): look it up, so its messages find their channel.
            channel = await self._channel(message.channel.id)
            if isinstance(channel, discord.Thread):
                message.channel = channel
        where = self._bridged(message.channel)
        if where is None or message.guild is None:
            return events
        channel, thread = where
        channel_id = str(channel.id)
        if not thread:
            self.last_seen[channel_id] = max(self.last_seen.get(channel_id, 0), message.id)
        if self._is_ours(message):
            return events
        if message.type not in (discord.MessageType.default, discord.MessageType.reply,
                                discord.MessageType.thread_starter_message):
            return events  # joins, pins, "started a thread": not messages people wrote
        message_id = str(message.id)
        if thread and not as_root:
            self.c._remember_thread(message_id, thread)
            if message_id == thread:
                as_root = True  # a forum post's opening message
            else:
                events += await self._ensure_root(message.channel)
        self.remember_author(message_id, str(message.author.id))
        owner, persona_id = self._receiver(channel_id)
        text = message.content
        if as_root and isinstance(message.channel, discord.Thread) and isinstance(
                message.channel.parent, discord.ForumChannel):
            text = f"**{message.channel.name}**\n{text}"
        text += "".join(_embed_text(e) for e in message.embeds if e.type == "rich")
        sender = await self.user(message.author)
        common: dict[str, Any] = {
            "room": self.room(channel), "sender": sender, "receiver": owner,
            "persona_id": persona_id, "timestamp_ms": int(message.created_at.timestamp() * 1000),
            "thread_root": thread if thread and not as_root else None,
            "reply_to": str(message.reference.message_id) if message.reference
            and message.reference.message_id and message.type == discord.MessageType.reply
            else None}
        files = [(a.filename, a.content_type, a.url, str(a.id)) for a in message.attachments]
        files += [(f"{s.name}.png", "image/png", s.url, f"sticker-{s.id}")
                  for s in message.stickers]
        if text:
            formatted = self._format(message, text)
            events.append(RemoteMessage(
                **common, message_id=message_id, text=formatted.body, html=formatted.html,
                mentions=formatted.mentioned_user_ids,
                mentions_room=formatted.mentions_room or message.mention_everyone))
        for index, (name, mimetype, url, file_id) in enumerate(files):
            part_id = message_id if not text and index == 0 else f"{message_id}/{file_id}"
            try:
                fetched = await self.c.fetch_media(url)
            except MediaRefused as e:
                log.warning("Discord file %s in %s not bridged: %s", file_id, channel_id, e)
                events.append(RemoteMessage(**common, message_id=part_id, text=name,
                                            file_refused=e.notice(name)))
                continue
            events.append(RemoteMessage(
                **common, message_id=part_id, text=name,
                attachment=Attachment(name, mimetype or fetched.mimetype, fetched.data)))
        return events

    async def _ensure_root(self, thread: discord.Thread) -> list[RemoteEvent]:
        """The message a thread hangs from, in Matrix before the thread's messages: the
        message it was opened on, a forum post's first message, or (a thread opened on
        nothing) a message naming the thread."""
        if str(thread.id) in self.threads_seen:
            return []
        self.threads_seen.add(str(thread.id))
        parent = thread.parent
        starter = None
        for source in ((thread,) if isinstance(parent, discord.ForumChannel) else (parent,)):
            try:
                starter = await source.fetch_message(thread.id)  # type: ignore[union-attr]
            except (discord.NotFound, discord.Forbidden):
                starter = None
        if starter is not None:
            return await self.convert(starter, as_root=True)
        owner, persona_id = self._receiver(str(parent.id)) if parent else (None, None)
        creator = thread.owner or (thread.guild.get_member(thread.owner_id)
                                   if thread.owner_id else None)
        return [RemoteMessage(
            room=self.room(parent), sender=await self.user(creator, thread.owner_id),
            receiver=owner, persona_id=persona_id, message_id=str(thread.id),
            timestamp_ms=int(discord.utils.snowflake_time(thread.id).timestamp() * 1000),
            text=f"Thread: {thread.name}", html=f"Thread: <strong>{thread.name}</strong>")]

    async def edited(self, payload: discord.RawMessageUpdateEvent) -> None:
        message = payload.message
        where = self._bridged(message.channel)
        if where is None or self._is_ours(message) or "content" not in payload.data:
            return
        if payload.cached_message is not None and (
                payload.cached_message.content == message.content):
            return  # an embed unfurled, not an edit of the words
        channel, _ = where
        owner, persona_id = self._receiver(str(channel.id))
        formatted = self._format(message, message.content)
        await self._emit(RemoteEdit(
            room=self.room(channel), sender=await self.user(message.author),
            receiver=owner, persona_id=persona_id, target_id=str(message.id),
            text=formatted.body, html=formatted.html))

    async def deleted(self, channel_id: int, message_ids: list[int]) -> None:
        channel = await self._channel(channel_id)
        where = self._bridged(channel)
        if where is None:
            return
        mapped, _ = where
        owner, persona_id = self._receiver(str(mapped.id))
        for message_id in map(str, message_ids):
            author = self.authors.get(message_id)
            if message_id in self.deleting:
                self.deleting.discard(message_id)  # the bridge deleted it for Matrix
                continue
            if author is None:
                continue  # not a message the bridge knows the author of
            await self._emit(RemoteRedaction(
                room=self.room(mapped), sender=RemoteUser(author), receiver=owner,
                persona_id=persona_id, target_id=message_id))

    async def _channel(self, channel_id: int) -> Any:
        try:
            return await self.c.channel(channel_id)
        except discord.HTTPException:
            return None

    async def reaction(self, payload: discord.RawReactionActionEvent, *, added: bool) -> None:
        if self.c.client is None or payload.user_id == self.c.client.user.id:
            return  # the bot's reactions are Matrix people's, already in Matrix
        where = self._bridged(await self._channel(payload.channel_id))
        if where is None:
            return
        channel, _ = where
        key = emoji_key(payload.emoji)
        reaction_id = f"{payload.message_id}:{payload.user_id}:{key}"
        owner, persona_id = self._receiver(str(channel.id))
        who = payload.member or (channel.guild.get_member(payload.user_id))
        sender = await self.user(who, payload.user_id)
        if added:
            await self._emit(RemoteReaction(
                room=self.room(channel), sender=sender, receiver=owner,
                persona_id=persona_id, reaction_id=reaction_id,
                target_id=str(payload.message_id), key=key))
        else:
            await self._emit(RemoteRedaction(
                room=self.room(channel), sender=sender, receiver=owner,
                persona_id=persona_id, target_id=reaction_id))

    async def typing(self, payload: discord.RawTypingEvent) -> None:
        if self.c.client is None or payload.user_id == self.c.client.user.id:
            return
        where = self._bridged(await self._channel(payload.channel_id))
        if where is None:
            return
        channel, _ = where
        owner, persona_id = self._receiver(str(channel.id))
        who = payload.user if isinstance(payload.user, discord.Member) else (
            channel.guild.get_member(payload.user_id))
        await self._emit(RemoteTyping(room=self.room(channel),
                                      sender=await self.user(who, payload.user_id),
                                      receiver=owner, persona_id=persona_id, typing=True))

    async def channel_created(self, channel: Any) -> None:
        for session in list(self.c.sessions.values()):
            await self.offer_channels(session, channel.guild)

    async def profile(self, before: discord.abc.User, after: discord.abc.User) -> None:
        if (before.display_name, before.display_avatar.key) == (
                after.display_name, after.display_avatar.key):
            return
        guild = getattr(after, "guild", None)
        await self._emit(RemoteProfile(room=RemoteRoom(f"{guild.id}/" if guild else ""),
                                       sender=await self.user(after)))


def _embed_text(embed: discord.Embed) -> str:
    parts = [p for p in (embed.title, embed.description) if p]
    parts += [f"{field.name}: {field.value}" for field in embed.fields]
    return ("\n" + "\n".join(parts)) if parts else ""
