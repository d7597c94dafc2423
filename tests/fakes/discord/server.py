"""FakeDiscord: one aiohttp server on 127.0.0.1 (a free port) playing Discord for the
unmodified discord.py (REST v10 under /api/v10, the Gateway at /gateway, the OAuth2 page at
/oauth2/authorize, attachments and avatars as the CDN), plus the in-process controls tests use
to build a world and act in it as Discord people."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from aiohttp import web

from .gateway import Gateway
from .models import (
    FORUM,
    PUBLIC_THREAD,
    TEXT,
    Activity,
    Attachment,
    Channel,
    Grant,
    Guild,
    Member,
    Message,
    OAuthApp,
    RequestRecord,
    Role,
    User,
    Webhook,
    snowflake,
)
from .oauth import OAuthFlow
from .rest import DiscordError, RateLimitRule, RestApi, register


class FakeDiscord:
    def __init__(self) -> None:
        self.activity = Activity()
        bot = User(snowflake(), "RelayForge", bot=True)
        self.app = OAuthApp(snowflake(), secrets.token_urlsafe(24),
                            f"bot.{secrets.token_urlsafe(30)}", bot)
        self.users: dict[str, User] = {bot.id: bot}
        self.guilds: dict[str, Guild] = {}
        self.webhooks: dict[str, Webhook] = {}
        self.grants: list[Grant] = []
        self.typing: list[str] = []
        # Channels whose webhook executions are refused (the bot lost its permissions).
        self.refusing: set[str] = set()
        # Channels whose history the bot may not read (no Read Message History), and each
        # history read (channel, query) for assertions.
        self.unreadable: set[str] = set()
        self.history_reads: list[tuple[str, dict[str, str]]] = []
        self.files: dict[str, Attachment] = {}
        self.avatars: dict[str, bytes] = {}
        self.stickers: dict[str, bytes] = {}
        self.rest = RestApi(self)
        register(self.rest)
        self.oauth = OAuthFlow(self)
        self.oauth.register(self.rest)
        self.gateway = Gateway(self.activity, lambda: self.app.bot_token, self._ready,
                               lambda: [g.payload() for g in self.guilds.values()])
        self.url = ""
        self._runner: web.AppRunner | None = None

    # ---- running ---------------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"{self.url.replace('http://', 'ws://')}/gateway"

    @property
    def authorize_endpoint(self) -> str:
        return f"{self.url}/oauth2/authorize"

    async def start(self) -> FakeDiscord:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/api/v10/{path:.*}", self.rest.handle)
        app.router.add_get("/gateway", self.gateway.handle)
        app.router.add_get("/oauth2/authorize", self.oauth.authorize)
        app.router.add_get("/attachments/{id}/{name}", self._file)
        app.router.add_get("/avatars/{uid}/{name}", self._avatar)
        app.router.add_get("/stickers/{name}", self._sticker)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        self.gateway.url = self.gateway_url
        return self

    async def stop(self) -> None:
        await self.gateway.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> FakeDiscord:
        return await self.start()

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    async def _file(self, request: web.Request) -> web.Response:
        file = self.files.get(request.match_info["id"])
        if file is None:
            return web.Response(status=404)
        return web.Response(body=file.data, content_type=file.content_type)

    async def _avatar(self, request: web.Request) -> web.Response:
        data = self.avatars.get(request.match_info["uid"])
        return web.Response(status=404) if data is None else web.Response(
            body=data, content_type="image/png")

    async def _sticker(self, request: web.Request) -> web.Response:
        data = self.stickers.get(request.match_info["name"].partition(".")[0])
        return web.Response(status=404) if data is None else web.Response(
            body=data, content_type="image/png")

    def _ready(self) -> dict[str, Any]:
        return {"v": 10, "user": {**self.app.bot.payload(), "verified": True,
                                  "mfa_enabled": False, "flags": 0},
                "guilds": [{"id": g.id, "unavailable": True} for g in self.guilds.values()],
                "application": {"id": self.app.client_id, "flags": self.app.flags},
                "private_channels": [], "relationships": [], "presences": [],
                "shard": [0, 1]}

    async def wait_until(self, condition: Callable[[], object], what: str) -> None:
        await self.activity.until(condition, what)

    # ---- building the world ----------------------------------------------------------------

    def add_user(self, username: str, global_name: str | None = None,
                 avatar: bytes | None = None) -> User:
        user = User(snowflake(), username, global_name)
        if avatar is not None:
            user.avatar = secrets.token_hex(8)
            self.avatars[user.id] = avatar
        self.users[user.id] = user
        return user

    def add_guild(self, name: str, owner: User, members: list[User] = ()) -> Guild:
        guild = Guild(snowflake(), name, owner.id)
        for user in (owner, self.app.bot, *members):
            guild.members[user.id] = Member(user)
        self.guilds[guild.id] = guild
        return guild

    def add_role(self, guild: Guild, name: str) -> Role:
        role = Role(snowflake(), name)
        guild.roles.append(role)
        return role

    def add_channel(self, guild: Guild, name: str, kind: int = TEXT) -> Channel:
        channel = Channel(snowflake(), guild.id, name, kind)
        guild.channels.append(channel)
        return channel

    def add_webhook(self, channel: Channel, name: str, creator: User) -> Webhook:
        hook = Webhook(snowflake(), secrets.token_urlsafe(40), channel.id, channel.guild_id,
                       name, creator)
        self.webhooks[hook.id] = hook
        return hook

    def sign_in(self, user: User) -> None:
        """The browser that opens the authorisation page is signed in to Discord as `user`."""
        self.oauth.signed_in = user

    # ---- looking things up -----------------------------------------------------------------

    def channel(self, channel_id: str) -> Channel:
        for guild in self.guilds.values():
            for channel in guild.channels:
                if channel.id == channel_id:
                    return channel
        raise DiscordError(404, 10003, "Unknown Channel")

    def message(self, channel: Channel, message_id: str) -> Message:
        for message in channel.messages:
            if message.id == message_id and not message.deleted:
                return message
        raise DiscordError(404, 10008, "Unknown Message")

    def messages(self, channel: Channel) -> list[Message]:
        return [m for m in channel.messages if not m.deleted]

    def grant_for(self, auth: str | None, scope: str | None = None) -> Grant:
        token = (auth or "").removeprefix("Bearer ")
        grant = next((g for g in self.grants if g.access_token == token), None)
        if grant is None or grant.revoked:
            raise DiscordError(401, 0, "401: Unauthorized")
        if scope and scope not in grant.scopes:
            raise DiscordError(403, 50001, "Missing Access")
        return grant

    def calls(self, path_part: str, method: str | None = None) -> list[RequestRecord]:
        return [r for r in self.rest.log if path_part in r.path
                and (method is None or r.method == method)]

    def render(self, message: Message) -> dict[str, Any]:
        guild = self.guilds[message.guild_id]
        referenced = None
        if message.reference:
            channel = self.channel(message.channel_id)
            referenced = next((m for m in channel.messages if m.id == message.reference), None)
        return message.payload(guild.members.get(message.author.id), referenced)

    def webhook_user(self, hook: Webhook, body: dict[str, Any]) -> User:
        # A webhook's messages carry the name and picture given with each execution.
        return User(hook.id, body.get("username") or hook.name,
                    avatar=body.get("avatar_url"), bot=True)

    # ---- what happens (and is dispatched to the gateway) -----------------------------------

    async def post(self, channel: Channel, author: User, content: str, *,
                   webhook_id: str | None = None, reply_to: Message | None = None,
                   attachments: list[Attachment] = (), mentions: list[User] = (),
                   mention_roles: list[Role] = (), embeds: list[dict] = (),
                   sticker: dict | None = None, message_id: str | None = None) -> Message:
        guild = self.guilds[channel.guild_id]
        message = Message(message_id or snowflake(), channel.id, guild.id, author, content,
                          webhook_id=webhook_id,
                          reference=reply_to.id if reply_to else None,
                          attachments=list(attachments), embeds=list(embeds), sticker=sticker,
                          mentions=list(mentions), mention_roles=[r.id for r in mention_roles],
                          mention_everyone="@everyone" in content and webhook_id is None)
        for file in message.attachments:
            file.url = f"{self.url}/attachments/{file.id}/{file.filename}"
            self.files[file.id] = file
        channel.messages.append(message)
        await self.gateway.dispatch("MESSAGE_CREATE", self.render(message))
        return message

    async def edit(self, message: Message, content: str) -> None:
        message.content = content
        message.edited_ms = int(__import__("time").time() * 1000)
        await self.gateway.dispatch("MESSAGE_UPDATE", self.render(message))

    async def delete(self, message: Message) -> None:
        message.deleted = True
        await self.gateway.dispatch("MESSAGE_DELETE", {
            "id": message.id, "channel_id": message.channel_id,
            "guild_id": message.guild_id})

    async def bulk_delete(self, channel: Channel, messages: list[Message]) -> None:
        for message in messages:
            message.deleted = True
        await self.gateway.dispatch("MESSAGE_DELETE_BULK", {
            "ids": [m.id for m in messages], "channel_id": channel.id,
            "guild_id": channel.guild_id})

    async def react(self, user: User, message: Message, key: str, *, added: bool = True
                    ) -> None:
        users = message.reactions.setdefault(key, [])
        if added and user.id not in users:
            users.append(user.id)
        elif not added and user.id in users:
            users.remove(user.id)
        await self.dispatch_reaction(message, user, key, added=added)

    async def dispatch_reaction(self, message: Message, user: User, key: str, *,
                                added: bool) -> None:
        name, _, emoji_id = key.partition(":")
        data: dict[str, Any] = {"user_id": user.id, "channel_id": message.channel_id,
                                "message_id": message.id, "guild_id": message.guild_id,
                                "emoji": {"id": emoji_id or None, "name": name},
                                "burst": False, "type": 0}
        if added:
            member = self.guilds[message.guild_id].members.get(user.id)
            if member is not None:
                data["member"] = member.payload()
            data["message_author_id"] = message.author.id
        await self.gateway.dispatch(
            "MESSAGE_REACTION_ADD" if added else "MESSAGE_REACTION_REMOVE", data)

    async def open_thread(self, parent: Channel, name: str, owner: User, *,
                          from_message: Message | None = None,
                          dispatch: bool = True) -> Channel:
        """A thread on a message (its id is the message's), or a standalone one."""
        guild = self.guilds[parent.guild_id]
        thread = Channel(from_message.id if from_message else snowflake(), guild.id, name,
                         PUBLIC_THREAD, parent_id=parent.id, owner_id=owner.id)
        guild.channels.append(thread)
        if dispatch:
            await self.gateway.dispatch("THREAD_CREATE", {**thread.payload(),
                                                          "newly_created": True})
        return thread

    async def forum_post(self, forum: Channel, author: User, title: str, content: str, *,
                         dispatch: bool = True) -> tuple[Channel, Message]:
        """A forum post: a thread whose first message has the thread's id."""
        assert forum.type == FORUM
        thread = await self.open_thread(forum, title, author, dispatch=dispatch)
        if dispatch:
            first = await self.post(thread, author, content, message_id=thread.id)
        else:
            first = Message(thread.id, thread.id, thread.guild_id, author, content)
            thread.messages.append(first)
        return thread, first

    async def set_nick(self, guild: Guild, user: User, nick: str | None) -> None:
        member = guild.members[user.id]
        member.nick = nick
        await self.gateway.dispatch("GUILD_MEMBER_UPDATE", {**member.payload(),
                                                            "guild_id": guild.id})

    async def typing_in(self, channel: Channel, user: User) -> None:
        member = self.guilds[channel.guild_id].members[user.id]
        await self.gateway.dispatch("TYPING_START", {
            "channel_id": channel.id, "guild_id": channel.guild_id, "user_id": user.id,
            "timestamp": 0, "member": member.payload()})

    async def delete_webhook(self, hook: Webhook) -> None:
        """A server admin removes the bridge's webhook."""
        self.webhooks.pop(hook.id, None)
        await self.gateway.dispatch("WEBHOOKS_UPDATE", {"guild_id": hook.guild_id,
                                                        "channel_id": hook.channel_id})

    def revoke_grants(self, user: User) -> None:
        """The person removes the app under Discord's Authorized Apps."""
        for grant in self.grants:
            if grant.user.id == user.id:
                grant.revoked = True

    def rate_limit(self, path: str, retry_after: float, times: int = 1, *,
                   is_global: bool = False, method: str | None = None) -> RateLimitRule:
        rule = RateLimitRule(path, retry_after, times, is_global, method)
        self.rest.limits.append(rule)
        return rule
