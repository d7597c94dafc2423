"""The Discord network: one bot on the Gateway (discord.py) for everything received and for
what webhooks cannot do (reactions, threads, typing); one webhook per bridged channel for
what people send, under their Discord name and picture; OAuth2 as the proof of ownership.

Remote ids: rooms are "GUILD/CHANNEL" (threads and forum posts live in their channel's room,
as Matrix threads), people their Discord user id, messages their id, reactions
"MESSAGE:USER:EMOJI" from Discord and "MESSAGE:EMOJI:EVENT" for the bot's own."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Any, TypeVar

import discord
import yarl
from discord.asset import Asset
from discord.gateway import DiscordWebSocket
from discord.http import Route

from ...core.media import MediaScope, origin_of
from ..base import (
    BridgeSink,
    ConnectorState,
    CredentialsRejected,
    MatrixEdit,
    MatrixMessage,
    MatrixReaction,
    MatrixRedaction,
    MatrixTyping,
    OAuthConnector,
    RateLimited,
    RemoteRoom,
    SendResult,
    Unsupported,
)
from ..history import HistoryCursor, HistoryPage
from ..login import LoginFailed
from .events import DiscordEvents
from .formatting import matrix_to_discord, pills
from .history import DiscordHistory
from .oauth import DiscordOAuth, GrantGone, describe
from .settings import (
    DISCORD_API,
    DISCORD_AUTHORIZE,
    DISCORD_CDN,
    DISCORD_GATEWAY,
    UPLOAD_LIMIT,
    missing_settings,
)
from .webhooks import Webhooks

log = logging.getLogger("relayforge.discord")

BOT_TOKEN_REFUSED = (
    "Discord refused the bridge's bot token (networks.discord.bot_token): nothing is bridged "
    "to or from Discord until it is replaced. Reset the token on the Bot page of the "
    "application in Discord's Developer Portal, put the new one in networks.discord.bot_token "
    "(or RELAYFORGE_NETWORKS__DISCORD__BOT_TOKEN) and restart the bridge.")
T = TypeVar("T")
# Application flags saying the privileged intents are on (GATEWAY_* and *_LIMITED).
_MEMBERS_FLAGS = (1 << 14) | (1 << 15)
_CONTENT_FLAGS = (1 << 18) | (1 << 19)
# The most characters one Discord message holds.
MAX_CONTENT = 2000


class DiscordSession:
    """A linked person: who they are on Discord, and when their grant was last proven."""

    def __init__(self, persona_id: str, user_id: str, owner: str) -> None:
        self.persona_id = persona_id
        self.user_id = user_id
        self.owner = owner
        self.name: str | None = None
        self.avatar: str | None = None
        self.checked = 0.0


class _Bot(discord.Client):
    """The bridge's bot; every Gateway event it cares about goes to `DiscordEvents`, one
    after another in the order the Gateway sent them (discord.py runs each handler as a
    task of its own, so a burst would otherwise reach Matrix in any order)."""

    def __init__(self, events: DiscordEvents, **options: Any) -> None:
        super().__init__(**options)
        self.bridge_events = events

    async def on_ready(self) -> None:
        self.bridge_events.in_order(self.bridge_events.ready())

    async def on_disconnect(self) -> None:
        self.bridge_events.in_order(self.bridge_events.disconnected())

    async def on_resumed(self) -> None:
        self.bridge_events.in_order(self.bridge_events.resumed())

    async def on_message(self, message: discord.Message) -> None:
        self.bridge_events.in_order(self.bridge_events.message(message))

    async def on_raw_message_edit(self, payload: discord.RawMessageUpdateEvent) -> None:
        self.bridge_events.in_order(self.bridge_events.edited(payload))

    async def on_raw_message_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        self.bridge_events.in_order(self.bridge_events.deleted(
            payload.channel_id, [payload.message_id]))

    async def on_raw_bulk_message_delete(self, payload: discord.RawBulkMessageDeleteEvent
                                         ) -> None:
        self.bridge_events.in_order(self.bridge_events.deleted(
            payload.channel_id, sorted(payload.message_ids)))

    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        self.bridge_events.in_order(self.bridge_events.reaction(payload, added=True))

    async def on_raw_reaction_remove(self, payload: discord.RawReactionActionEvent) -> None:
        self.bridge_events.in_order(self.bridge_events.reaction(payload, added=False))

    async def on_raw_typing(self, payload: discord.RawTypingEvent) -> None:
        self.bridge_events.in_order(self.bridge_events.typing(payload))

    async def on_member_update(self, before: discord.Member, after: discord.Member) -> None:
        self.bridge_events.in_order(self.bridge_events.profile(before, after))

    async def on_user_update(self, before: discord.User, after: discord.User) -> None:
        self.bridge_events.in_order(self.bridge_events.profile(before, after))

    async def on_guild_channel_create(self, channel: discord.abc.GuildChannel) -> None:
        self.bridge_events.in_order(self.bridge_events.channel_created(channel))

    async def on_webhooks_update(self, channel: discord.abc.GuildChannel) -> None:
        self.bridge_events.c.webhooks.forget(str(channel.id))


class DiscordConnector(OAuthConnector):
    network = "discord"
    label = "Discord"

    def __init__(self, settings: dict[str, Any] | None = None) -> None:
        super().__init__(settings)
        missing_settings(self.settings)
        s = self.settings
        self.api_url = str(s.get("api_url") or DISCORD_API).rstrip("/")
        self.gateway_url = str(s.get("gateway_url") or DISCORD_GATEWAY)
        self.cdn_url = str(s.get("cdn_url") or DISCORD_CDN).rstrip("/")
        self.oauth = DiscordOAuth(s["client_id"], s["client_secret"], self.api_url,
                                  s.get("oauth_url") or DISCORD_AUTHORIZE)
        self.ready_timeout = float(s.get("guild_ready_timeout", 2.0))
        self.grant_check_seconds = float(s.get("grant_check_seconds", 300))
        self.max_upload = int(s.get("max_upload_bytes") or UPLOAD_LIMIT)
        self.max_refusals = int(s.get("max_refusals") or 50)
        self.sessions: dict[str, DiscordSession] = {}
        # Channels a mapping rule brought in, and the personas whose rules did.
        self.mapped: dict[str, list[str]] = {}
        self.sink: BridgeSink | None = None
        self.webhooks = Webhooks(self)
        self.events = DiscordEvents(self)
        self.history = DiscordHistory(self)
        self.client: _Bot | None = None
        self._running: asyncio.Task | None = None
        # The thread a message is in, for edits, deletes and reactions (webhooks and the
        # bot need the thread's id), and how many Matrix reactions stand behind the bot's.
        self.thread_of: OrderedDict[str, str] = OrderedDict()
        self._reacted: dict[tuple[str, str], int] = {}
        self._told_token_refused = False
        self._lacking_intents: list[str] = []  # by the application flags, at start

    # ---- lifecycle --------------------------------------------------------------------------

    async def start(self, sink: BridgeSink) -> None:
        self.sink = sink
        self.state = ConnectorState.CONNECTING
        # discord.py reads its endpoints from these class attributes (one Discord per
        # process): point them at the configured API, Gateway and CDN.
        Route.BASE = self.api_url
        DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(self.gateway_url)
        Asset.BASE = self.cdn_url
        intents = discord.Intents.none()
        intents.guilds = intents.guild_messages = intents.message_content = True
        intents.guild_reactions = intents.guild_typing = intents.members = True
        self.client = _Bot(self.events, intents=intents, chunk_guilds_at_startup=False,
                           guild_ready_timeout=self.ready_timeout,
                           allowed_mentions=discord.AllowedMentions(everyone=False,
                                                                    roles=False))
        try:
            await self.client.login(self.settings["bot_token"])
        except discord.LoginFailure:
            # The rest of the bridge is fine: it keeps running and the admins are told.
            await self._bot_token_refused()
            return
        self._lacking_intents = self._check_intents(self.client.application_flags.value)
        self._running = asyncio.create_task(self._connect())
        ready = asyncio.create_task(self.events.first_ready.wait())
        done, _ = await asyncio.wait({ready, self._running},
                                     return_when=asyncio.FIRST_COMPLETED)
        if self._running in done:
            ready.cancel()
            self.state = ConnectorState.FAILED
            self._running.result()  # raises why, unless the bot token was refused (told)
            return
        self.state = ConnectorState.CONNECTED

    async def _connect(self) -> None:
        assert self.client is not None
        try:
            await self.client.connect(reconnect=True)
        except discord.ConnectionClosed as e:
            if e.code != 4004:  # 4004: "Authentication failed", the bot token was refused
                raise
            await self._bot_token_refused()
        except discord.PrivilegedIntentsRequired as e:
            lacking = self._lacking_intents or ["Server Members Intent",
                                                "Message Content Intent"]
            raise RuntimeError(
                f"the Discord application lacks the privileged intent(s) {' and '.join(lacking)}"
                ": turn them on under Privileged Gateway Intents on the Bot page of the "
                "application in Discord's Developer Portal") from e

    async def _bot_token_refused(self) -> None:
        """Discord no longer takes the bot token (reset or revoked): Discord stops here
        until an admin sets a new one; said to every admin once."""
        self.state = ConnectorState.FAILED
        if self._told_token_refused:
            return
        self._told_token_refused = True
        log.error(BOT_TOKEN_REFUSED)
        await self.report_bridge_problem(BOT_TOKEN_REFUSED)

    @staticmethod
    def _check_intents(flags: int) -> list[str]:
        lacking = [name for name, bits in (("Server Members Intent", _MEMBERS_FLAGS),
                                           ("Message Content Intent", _CONTENT_FLAGS))
                   if not flags & bits]
        if lacking:
            log.warning("The Discord application may lack the privileged intent(s) %s "
                        "(Developer Portal, Bot page); the Gateway refuses them if so",
                        ", ".join(lacking))
        return lacking

    async def stop(self) -> None:
        if self.client is not None:
            await self.client.close()
        if self._running is not None:
            self._running.cancel()
            try:
                await self._running
            except (asyncio.CancelledError, Exception):
                pass
            self._running = None
        await self.events.stop()
        await self.webhooks.close()
        await self.history.close()
        self.state = ConnectorState.STOPPED

    def media_scope(self) -> MediaScope:
        # Discord's CDN needs no credentials: none go anywhere. The configured API and CDN
        # may be local (a test server, an in-house proxy); nothing else is trusted.
        api, cdn = origin_of(self.api_url), origin_of(self.cdn_url)
        return MediaScope(credential_origins=(), trusted_origins=(api, cdn),
                          https_only=api.startswith("https:") and cdn.startswith("https:"))

    @property
    def bot_user_id(self) -> str:
        assert self.client is not None and self.client.user is not None
        return str(self.client.user.id)

    # ---- linking ----------------------------------------------------------------------------

    def describe_scopes(self, scopes: list[str]) -> list[str]:
        return describe(scopes)

    async def open_session(self, persona_id: str, external_user_id: str,
                           credentials: dict[str, str], owner: str) -> None:
        session = self.sessions[persona_id] = DiscordSession(persona_id, external_user_id, owner)
        await self.events.offer_channels(session)

    async def close_session(self, persona_id: str) -> None:
        self.sessions.pop(persona_id, None)

    async def revoke_access(self, external_user_id: str, credentials: dict[str, str]) -> bool:
        token = credentials.get("refresh_token")
        return bool(token) and await self.oauth.revoke(token)

    def workspace_of(self, channel: str) -> str:
        return channel.partition("/")[0]

    async def person(self, session: DiscordSession) -> DiscordSession:
        """Before acting as a person: their grant must still hold (checked at most every
        `grant_check_seconds`), which also refreshes their name and picture. A revoked
        grant makes the persona read-only until they relink."""
        if time.monotonic() - session.checked < self.grant_check_seconds and session.name:
            return session
        try:
            if self.access_token is None:
                raise GrantGone("no access token store")
            token = await self.access_token(session.persona_id, self.oauth.refresh)
            me = await self.oauth.me(token)
        except GrantGone as e:
            raise await self.credentials_rejected(
                session.persona_id, f"Discord no longer honours the grant ({e})") from e
        session.name = me.get("global_name") or me.get("username")
        session.avatar = me.get("avatar")
        session.checked = time.monotonic()
        return session

    # ---- the bot's own calls ----------------------------------------------------------------

    async def bot_call(self, call: Awaitable[T], channel_id: str) -> T:
        """A bot call; Discord's refusals become what the core understands."""
        try:
            return await call
        except discord.RateLimited as e:
            raise RateLimited(e.retry_after, "Discord rate limit on a bot call") from e
        except discord.Forbidden as e:
            self.webhooks.refused(channel_id)
            raise Unsupported(f"Discord refused the bot ({e.status}: {e.text}); check its "
                              "permissions on the server") from e
        except discord.NotFound as e:
            raise Unsupported(f"Discord does not know it any more ({e.text})") from e
        except discord.HTTPException as e:
            if e.status == 401:
                await self._bot_token_refused()
            raise

    async def channel(self, channel_id: str | int) -> Any:
        assert self.client is not None
        found = self.client.get_channel(int(channel_id))
        if found is None:
            found = await self.client.fetch_channel(int(channel_id))
        return found

    # ---- rooms ------------------------------------------------------------------------------

    async def join(self, persona_id: str, remote_room_id: str,
                   since_ms: int | None = None) -> RemoteRoom:
        """`GUILD/#name` or `GUILD/CHANNEL` (the guild by id or name): the person must be a
        member of the server; what was said since `since_ms` is caught up."""
        session = self.sessions.get(persona_id)
        if session is None or self.client is None:
            raise LoginFailed("this Discord account's session is not open")
        wanted_guild, _, wanted = remote_room_id.partition("/")
        guild = next((g for g in self.client.guilds if wanted_guild in (str(g.id), g.name)),
                     None)
        if guild is None:
            raise LoginFailed(f"the RelayForge bot is not on a Discord server {wanted_guild}"
                              " (a server admin must add it first)")
        member = guild.get_member(int(session.user_id))
        if member is None:
            try:
                member = await guild.fetch_member(int(session.user_id))
            except discord.NotFound:
                raise LoginFailed(f"you are not a member of the Discord server {guild.name}"
                                  ) from None
        name = wanted.removeprefix("#")
        channel = next((c for c in guild.channels
                        if str(c.id) == wanted or (wanted.startswith("#") and c.name == name)),
                       None)
        if not isinstance(channel, discord.TextChannel | discord.ForumChannel):
            raise LoginFailed(f"there is no text or forum channel {wanted} on {guild.name}")
        # The bot sees more than the person may: only channels their permissions show them.
        if not channel.permissions_for(member).view_channel:
            raise LoginFailed(f"you may not see #{channel.name} on {guild.name}")
        personas = self.mapped.setdefault(str(channel.id), [])
        if persona_id not in personas:
            personas.append(persona_id)
        room = self.events.room(channel)
        if since_ms and isinstance(channel, discord.TextChannel):
            after = discord.Object(discord.utils.time_snowflake(
                datetime.fromtimestamp(since_ms / 1000, UTC)))
            await self.events.catch_up(channel, after)
        return room

    async def fetch_history(self, persona_id: str, room: RemoteRoom, *,
                            after: HistoryCursor | None, not_before_ms: int | None,
                            limit: int) -> HistoryPage:
        """The channel's past (and its threads'), for backfill and catching up."""
        return await self.history.fetch(persona_id, room, after=after,
                                        not_before_ms=not_before_ms, limit=limit)

    # ---- Matrix -> Discord ------------------------------------------------------------------

    async def _markdown(self, text: str, html: str | None) -> str:
        assert self.sink is not None
        ids: dict[str, str] = {}
        for mxid in pills(html):
            remote = await self.sink.remote_user_for(mxid)
            if remote and remote.isdigit():
                ids[mxid] = remote
        return matrix_to_discord(text, html, ids.get)

    async def _speaker(self, event: MatrixMessage) -> tuple[str, str | None, str]:
        """(webhook name, picture, text): the person's Discord name and avatar, or for a
        relayed Matrix user the name the core put before the text."""
        assert self.sink is not None
        text = await self._markdown(event.text, event.html)
        session = self.sessions.get(event.persona_id or "")
        if event.persona_id is not None and session is None:
            raise ConnectionError("this Discord account's session is not open")
        if session is None or await self.sink.remote_user_for(
                event.sender_mxid) != session.user_id:
            # Relayed by a rule for someone without a Discord account: the core put their
            # Matrix name before the text; the webhook shows it as the name too, marked as
            # from Matrix so no one can pass for a linked person by choosing their name.
            # Their Matrix picture too, which the core gives as a URL Discord can fetch.
            name, sep, _ = event.text.partition(": ")
            return (_webhook_name(f"{name[:70]} (Matrix)" if sep else "Matrix"),
                    event.sender_avatar if sep else None, text)
        session = await self.person(session)
        avatar = (f"{self.cdn_url}/avatars/{session.user_id}/{session.avatar}.png"
                  if session.avatar else None)
        return _webhook_name(session.name or session.user_id), avatar, text

    async def send_message(self, event: MatrixMessage) -> SendResult:
        guild, _, channel = event.room.remote_id.partition("/")
        name, avatar, text = await self._speaker(event)
        thread = (await self._thread_for(channel, event.thread_root)
                  if event.thread_root else None)
        if event.reply_to:
            where = self.thread_of.get(event.reply_to) or channel
            text = (f"-# ↪ https://discord.com/channels/{guild}/{where}/{event.reply_to}\n"
                    f"{text}")
        attachment = event.attachment
        if attachment is not None:
            if len(attachment.data) > self.max_upload:
                raise Unsupported(
                    f"{attachment.name} is {len(attachment.data)} bytes, more than Discord "
                    f"takes ({self.max_upload} bytes)")
            text = "" if text == attachment.name else text
        if len(text) > MAX_CONTENT:
            raise Unsupported(f"the message has {len(text)} characters, more than Discord "
                              f"takes in one message ({MAX_CONTENT})")
        payload: dict[str, Any] = {"content": text, "username": name,
                                   "allowed_mentions": {"parse": ["users"]}}
        if avatar:
            payload["avatar_url"] = avatar
        sent = await self.webhooks.execute(channel, payload, attachment, thread)
        message_id = str(sent["id"])
        if thread:
            self._remember_thread(message_id, thread)
        self.events.remember_author(message_id, str(sent.get("webhook_id") or ""))
        return SendResult(message_id)

    async def _thread_for(self, channel_id: str, root: str) -> str:
        """The Discord thread a Matrix thread continues: the thread its root is in, the
        thread on the root message (a forum post's id is its first message's), or a new
        thread the bot opens on it."""
        known = self.thread_of.get(root)
        if known:
            return known
        try:
            existing = await self.channel(root)
            if isinstance(existing, discord.Thread):
                return root
        except (discord.NotFound, discord.Forbidden):
            pass
        parent = await self.channel(channel_id)
        message = await self.bot_call(parent.fetch_message(int(root)), channel_id)
        name = (message.clean_content or "Thread").split("\n")[0][:80] or "Thread"
        thread = await self.bot_call(message.create_thread(name=name), channel_id)
        return str(thread.id)

    def _remember_thread(self, message_id: str, thread_id: str) -> None:
        self.thread_of[message_id] = thread_id
        while len(self.thread_of) > 20000:
            self.thread_of.popitem(last=False)

    async def send_edit(self, event: MatrixEdit) -> None:
        if event.persona_id is not None:
            await self.person(self.sessions[event.persona_id])
        channel = event.room.remote_id.partition("/")[2]
        text = await self._markdown(event.text, event.html)
        if len(text) > MAX_CONTENT:
            raise Unsupported(f"the edit has {len(text)} characters, more than Discord takes "
                              f"in one message ({MAX_CONTENT})")
        await self.webhooks.edit(channel, event.target_id, text,
                                 self.thread_of.get(event.target_id))

    async def send_redaction(self, event: MatrixRedaction) -> None:
        channel = event.room.remote_id.partition("/")[2]
        if event.target_is_reaction:
            message, emoji, _ = event.target_id.split(":", 2)
            key = (message, emoji)
            self._reacted[key] = max(self._reacted.get(key, 1) - 1, 0)
            if self._reacted[key] == 0:
                where = await self.channel(self.thread_of.get(message) or channel)
                await self.bot_call(where.get_partial_message(int(message)).remove_reaction(
                    emoji, discord.Object(int(self.bot_user_id))), channel)
            return
        if event.persona_id is not None:
            await self.person(self.sessions[event.persona_id])
        self.events.deleting.add(event.target_id)
        await self.webhooks.delete(channel, event.target_id,
                                   self.thread_of.get(event.target_id))

    async def send_reaction(self, event: MatrixReaction) -> SendResult:
        channel = event.room.remote_id.partition("/")[2]
        emoji = event.key.removesuffix("\ufe0f") if len(event.key) > 1 else event.key
        if emoji.startswith(":") or emoji.isascii():
            raise Unsupported(f"Discord has no emoji for the reaction {event.key}")
        if event.persona_id is not None:
            await self.person(self.sessions[event.persona_id])
        where = await self.channel(self.thread_of.get(event.target_id) or channel)
        await self.bot_call(where.get_partial_message(int(event.target_id)).add_reaction(
            event.key), channel)
        key = (event.target_id, event.key)
        self._reacted[key] = self._reacted.get(key, 0) + 1
        return SendResult(f"{event.target_id}:{event.key}:{event.event_id}")

    async def send_typing(self, event: MatrixTyping) -> None:
        if not event.typing or self.client is None:
            return
        channel = event.room.remote_id.partition("/")[2]
        try:
            where = await self.channel(channel)
            await where.typing()  # one POST /typing; Discord shows it for ten seconds
        except (discord.HTTPException, CredentialsRejected) as e:
            log.debug("Typing in %s not shown: %s", channel, e)


def _webhook_name(name: str) -> str:
    """Webhook names are 1-80 characters and may not contain "discord" or "clyde"."""
    for word in ("discord", "clyde"):
        index = name.lower().find(word)
        while index >= 0:
            name = name[:index + 1] + "\u200b" + name[index + 1:]
            index = name.lower().find(word, index + 2)
    return (name.strip() or "Matrix")[:80]
