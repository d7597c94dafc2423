"""The fake Discord's world: users, guilds, channels (text, forum, threads), messages,
webhooks, the OAuth application and its grants. Plain records that render themselves in the
shapes of Discord's API v10 (what discord.py parses)."""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import attrs

DISCORD_EPOCH_MS = 1420070400000
# How long a test waits for something to happen at the fake before failing.
DEADLINE = 15.0

# Channel types (https://discord.com/developers/docs/resources/channel#channel-object).
TEXT, PUBLIC_THREAD, PRIVATE_THREAD, FORUM = 0, 11, 12, 15
THREAD_TYPES = (PUBLIC_THREAD, PRIVATE_THREAD)
# Permission bits (https://discord.com/developers/docs/topics/permissions).
VIEW_CHANNEL, READ_MESSAGE_HISTORY = 1 << 10, 1 << 16
# What a new server's @everyone may do: add reactions, view channels, send messages, embed
# links, attach files, read message history, create public threads, send in threads.
EVERYONE = ((1 << 6) | VIEW_CHANNEL | (1 << 11) | (1 << 14) | (1 << 15)
            | READ_MESSAGE_HISTORY | (1 << 35) | (1 << 38))

_counter = itertools.count(1)


def snowflake(at_ms: int | None = None) -> str:
    """A Discord id: milliseconds since Discord's epoch, and an increment below them."""
    ms = int(time.time() * 1000) if at_ms is None else at_ms
    return str(((ms - DISCORD_EPOCH_MS) << 22) | (next(_counter) & 0x3FFFFF))


def snowflake_ms(value: str) -> int:
    return (int(value) >> 22) + DISCORD_EPOCH_MS


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


class Activity:
    """Wakes whoever waits for something to happen at the fake (a request, a gateway frame),
    so tests wait on conditions instead of sleeping."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def until(self, condition: Callable[[], object], what: str) -> None:
        try:
            async with asyncio.timeout(DEADLINE):
                while not condition():
                    await self._event.wait()
        except TimeoutError:
            raise AssertionError(f"never happened at the fake Discord: {what}") from None


@attrs.define(eq=False)
class User:
    id: str
    username: str
    global_name: str | None = None
    avatar: str | None = None
    bot: bool = False

    def payload(self) -> dict[str, Any]:
        return {"id": self.id, "username": self.username, "global_name": self.global_name,
                "discriminator": "0", "avatar": self.avatar, "bot": self.bot,
                "public_flags": 0}


@attrs.define(eq=False)
class Member:
    user: User
    nick: str | None = None
    roles: list[str] = attrs.field(factory=list)

    def payload(self) -> dict[str, Any]:
        return {"user": self.user.payload(), "nick": self.nick, "roles": list(self.roles),
                "joined_at": iso(snowflake_ms(self.user.id)), "deaf": False, "mute": False,
                "flags": 0, "avatar": None}


@attrs.define(eq=False)
class Role:
    id: str
    name: str
    permissions: int = 0

    def payload(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "color": 0, "hoist": False,
                "position": 0, "permissions": str(self.permissions), "managed": False,
                "mentionable": True, "flags": 0}


@attrs.define(eq=False)
class Channel:
    id: str
    guild_id: str
    name: str
    type: int = TEXT
    parent_id: str | None = None
    owner_id: str | None = None
    archived: bool = False
    messages: list[Message] = attrs.field(factory=list)
    # Members a permission overwrite denies viewing the channel (and so its history).
    hidden_from: set[str] = attrs.field(factory=set)

    @property
    def is_thread(self) -> bool:
        return self.type in THREAD_TYPES

    def payload(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "guild_id": self.guild_id, "name": self.name,
                                "type": self.type, "position": 0,
                                "permission_overwrites": [
                                    {"id": uid, "type": 1, "allow": "0",
                                     "deny": str(VIEW_CHANNEL | READ_MESSAGE_HISTORY)}
                                    for uid in sorted(self.hidden_from)], "nsfw": False,
                                "parent_id": self.parent_id, "flags": 0}
        if self.type == TEXT:
            data.update(topic=None, last_message_id=None, rate_limit_per_user=0)
        if self.type == FORUM:
            data.update(topic=None, available_tags=[], default_reaction_emoji=None,
                        default_thread_rate_limit_per_user=0, default_sort_order=None,
                        default_forum_layout=0, rate_limit_per_user=0)
        if self.is_thread:
            data.update(owner_id=self.owner_id, message_count=len(self.messages),
                        member_count=1, rate_limit_per_user=0, last_message_id=None,
                        thread_metadata={"archived": self.archived,
                                         "auto_archive_duration": 1440,
                                         "archive_timestamp": iso(snowflake_ms(self.id)),
                                         "locked": False},
                        applied_tags=[])
        return data


@attrs.define(eq=False)
class Attachment:
    id: str
    filename: str
    content_type: str
    data: bytes = attrs.field(repr=False)
    url: str = ""

    def payload(self) -> dict[str, Any]:
        return {"id": self.id, "filename": self.filename, "size": len(self.data),
                "url": self.url, "proxy_url": self.url, "content_type": self.content_type}


@attrs.define(eq=False)
class Message:
    id: str
    channel_id: str
    guild_id: str
    author: User
    content: str
    webhook_id: str | None = None
    reference: str | None = None
    attachments: list[Attachment] = attrs.field(factory=list)
    embeds: list[dict[str, Any]] = attrs.field(factory=list)
    sticker: dict[str, Any] | None = None
    # emoji key ("👍" or "name:id") -> ids of the users who reacted
    reactions: dict[str, list[str]] = attrs.field(factory=dict)
    edited_ms: int | None = None
    mention_everyone: bool = False
    mentions: list[User] = attrs.field(factory=list)
    mention_roles: list[str] = attrs.field(factory=list)
    deleted: bool = False

    def payload(self, member: Member | None = None,
                referenced: Message | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id, "channel_id": self.channel_id, "guild_id": self.guild_id,
            "author": self.author.payload(), "content": self.content,
            "timestamp": iso(snowflake_ms(self.id)),
            "edited_timestamp": iso(self.edited_ms) if self.edited_ms else None,
            "tts": False, "mention_everyone": self.mention_everyone,
            "mentions": [u.payload() for u in self.mentions],
            "mention_roles": list(self.mention_roles),
            "attachments": [a.payload() for a in self.attachments],
            "embeds": list(self.embeds), "pinned": False, "type": 19 if self.reference else 0,
            "flags": 0, "components": [],
            "reactions": [{"emoji": _emoji_payload(key), "count": len(users), "me": False,
                           "count_details": {"burst": 0, "normal": len(users)},
                           "burst_colors": [], "me_burst": False, "burst_me": False,
                           "burst_count": 0}
                          for key, users in self.reactions.items() if users],
        }
        if self.webhook_id:
            data["webhook_id"] = self.webhook_id
        if member is not None and not self.webhook_id:
            data["member"] = {k: v for k, v in member.payload().items() if k != "user"}
        if self.reference:
            data["message_reference"] = {"message_id": self.reference,
                                         "channel_id": self.channel_id,
                                         "guild_id": self.guild_id, "type": 0}
            data["referenced_message"] = referenced.payload() if referenced else None
        if self.sticker:
            data["sticker_items"] = [self.sticker]
        return data


def _emoji_payload(key: str) -> dict[str, Any]:
    name, _, emoji_id = key.partition(":")
    return {"id": emoji_id or None, "name": name}


@attrs.define(eq=False)
class Guild:
    id: str
    name: str
    owner_id: str
    channels: list[Channel] = attrs.field(factory=list)
    members: dict[str, Member] = attrs.field(factory=dict)
    roles: list[Role] = attrs.field(factory=list)

    def payload(self, full: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id, "name": self.name, "icon": None, "splash": None,
            "discovery_splash": None, "owner_id": self.owner_id, "afk_channel_id": None,
            "afk_timeout": 300, "verification_level": 0, "default_message_notifications": 0,
            "explicit_content_filter": 0, "features": [], "mfa_level": 0,
            "system_channel_id": None, "system_channel_flags": 0, "rules_channel_id": None,
            "vanity_url_code": None, "description": None, "banner": None, "premium_tier": 0,
            "preferred_locale": "en-US", "public_updates_channel_id": None,
            "nsfw_level": 0, "premium_progress_bar_enabled": False,
            "roles": [Role(self.id, "@everyone", EVERYONE).payload(),
                      *(r.payload() for r in self.roles)],
            "emojis": [], "stickers": [],
        }
        if full:
            data.update(
                member_count=len(self.members), large=False, unavailable=False,
                joined_at=iso(snowflake_ms(self.id)),
                channels=[c.payload() for c in self.channels if not c.is_thread],
                threads=[c.payload() for c in self.channels if c.is_thread and not c.archived],
                members=[m.payload() for m in self.members.values()],
                voice_states=[], presences=[], stage_instances=[],
                guild_scheduled_events=[], soundboard_sounds=[])
        return data


@attrs.define(eq=False)
class Webhook:
    id: str
    token: str = attrs.field(repr=False)
    channel_id: str
    guild_id: str
    name: str
    creator: User

    def payload(self) -> dict[str, Any]:
        return {"id": self.id, "type": 1, "token": self.token, "channel_id": self.channel_id,
                "guild_id": self.guild_id, "name": self.name, "avatar": None,
                "application_id": None, "user": self.creator.payload()}


@attrs.define(eq=False)
class OAuthApp:
    client_id: str
    client_secret: str = attrs.field(repr=False)
    bot_token: str = attrs.field(repr=False)
    bot: User
    redirect_uris: list[str] = attrs.field(factory=list)
    # GATEWAY_GUILD_MEMBERS (1 << 14) and GATEWAY_MESSAGE_CONTENT (1 << 18): the privileged
    # intents turned on for the application.
    flags: int = (1 << 14) | (1 << 18)


@attrs.define(eq=False)
class Grant:
    """What a person allowed the application: the tokens that speak for it."""

    user: User
    scopes: list[str]
    access_token: str = attrs.field(factory=lambda: secrets.token_urlsafe(24), repr=False)
    refresh_token: str = attrs.field(factory=lambda: secrets.token_urlsafe(24), repr=False)
    revoked: bool = False


@attrs.define
class RequestRecord:
    method: str
    path: str
    status: int
    query: dict[str, str]
    json: Any = None
    form: dict[str, str] = attrs.field(factory=dict)
    authorization: str | None = None

    @property
    def ok(self) -> bool:
        return self.status < 400
