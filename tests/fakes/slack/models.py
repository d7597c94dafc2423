"""The fake Slack's world: enterprises, workspaces, people, conversations, messages, files,
apps and tokens. Plain records; the rules live in state.py and the wire shapes in render.py."""

from __future__ import annotations

import asyncio
import secrets
import string
from collections.abc import Callable
from typing import Any, Literal

import attrs

_ID_ALPHABET = string.ascii_uppercase + string.digits

ChannelKind = Literal["public", "private", "im", "mpim"]
TokenKind = Literal["user", "app"]


def new_id(prefix: str, length: int = 10) -> str:
    """A Slack-looking ID: an upper-case type letter (T, U, W, C, D, F, E, A) and base-36 chars."""
    return prefix + "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))


def format_ts(micros: int) -> str:
    """Slack message timestamps are seconds with exactly six decimals ("1700000000.000100")."""
    return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"


def parse_ts(ts: str | None) -> int | None:
    if not ts:
        return None
    try:
        seconds, _, fraction = str(ts).partition(".")
        return int(seconds) * 1_000_000 + int((fraction + "000000")[:6])
    except ValueError:
        return None


# How long a test waits for something to happen at the fake before failing.
DEADLINE = 10.0


class Activity:
    """Wakes whoever waits for something to happen at the fake (a request, a connection, an
    ack, an HTTP delivery), so tests wait on conditions instead of sleeping."""

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
            raise AssertionError(f"never happened at the fake Slack: {what}") from None


class SlackError(Exception):
    """A Web API failure: answered as HTTP 200 `{"ok": false, "error": code, **extra}`."""

    def __init__(self, code: str, **extra: Any) -> None:
        super().__init__(code)
        self.code = code
        self.extra = extra


@attrs.define(eq=False)
class Enterprise:
    id: str
    name: str
    domain: str


@attrs.define(eq=False)
class Team:
    id: str
    name: str
    domain: str
    enterprise: Enterprise | None = None
    # Custom emoji: name -> image URL, or "alias:other" exactly as emoji.list returns them.
    emoji: dict[str, str] = attrs.Factory(dict)
    emoji_images: dict[str, bytes] = attrs.Factory(dict)


@attrs.define(eq=False)
class User:
    id: str
    team: Team
    name: str
    real_name: str
    display_name: str
    email: str
    avatar: bytes
    avatar_hash: str
    # Enterprise Grid people can belong to several workspaces of their organisation.
    extra_teams: list[Team] = attrs.Factory(list)
    deleted: bool = False
    is_admin: bool = False
    is_bot: bool = False
    tz: str = "Europe/London"
    status_text: str = ""
    status_emoji: str = ""
    updated: int = 0

    @property
    def teams(self) -> list[Team]:
        return [self.team, *self.extra_teams]


@attrs.define(eq=False)
class SlackFile:
    id: str
    user: User
    team: Team
    name: str
    title: str
    length: int
    created: int
    mimetype: str = "application/octet-stream"
    filetype: str = "binary"
    data: bytes | None = None
    upload_ticket: str = ""
    channels: list[str] = attrs.Factory(list)
    # Where an authorised download is redirected (a storage host), for tests of what follows
    # a redirect; None serves the bytes directly.
    moved_to: str | None = None

    @property
    def uploaded(self) -> bool:
        return self.data is not None


@attrs.define(eq=False)
class Message:
    ts: str
    user: str
    team_id: str
    text: str
    thread_ts: str | None = None
    subtype: str | None = None
    blocks: list[dict[str, Any]] | None = None
    files: list[SlackFile] = attrs.Factory(list)
    edited: dict[str, str] | None = None
    # Reaction name -> users in the order they reacted (Slack lists them that way).
    reactions: dict[str, list[str]] = attrs.Factory(dict)
    client_msg_id: str | None = None
    reply_broadcast: bool = False

    @property
    def is_reply(self) -> bool:
        return self.thread_ts is not None and self.thread_ts != self.ts


@attrs.define(eq=False)
class Channel:
    id: str
    team: Team
    kind: ChannelKind
    name: str
    members: list[str]
    creator: str
    created: int
    is_archived: bool = False
    is_general: bool = False
    topic: str = ""
    purpose: str = ""
    messages: list[Message] = attrs.Factory(list)
    last_micros: int = 0

    @property
    def channel_type(self) -> str:
        """The `channel_type` of message events: channel, group (private), im or mpim."""
        return {"public": "channel", "private": "group", "im": "im", "mpim": "mpim"}[self.kind]

    def find(self, ts: str | None) -> Message | None:
        for message in self.messages:
            if message.ts == ts:
                return message
        return None

    def replies(self, thread_ts: str) -> list[Message]:
        return [m for m in self.messages if m.thread_ts == thread_ts and m.ts != thread_ts]


@attrs.define(eq=False)
class SlackApp:
    id: str
    name: str
    client_id: str
    client_secret: str
    signing_secret: str
    # The legacy verification token Slack still puts in every event payload's `token`.
    verification_token: str
    app_token: str
    redirect_uris: list[str] = attrs.Factory(list)
    token_rotation: bool = False
    # How long a rotating access token lives (Slack: 12 hours); tests shorten it so the
    # bridge refreshes before each call.
    token_lifetime: int = 43_200
    # Socket Mode on: events go over the WebSocket; off: POSTed to request_url (Events API).
    socket_mode: bool = True
    request_url: str | None = None
    # Event types the app subscribed to; None means every type.
    event_types: set[str] | None = None


@attrs.define(eq=False)
class Token:
    value: str
    kind: TokenKind
    app: SlackApp
    user: User | None
    scopes: frozenset[str] | None
    created: float
    expires_at: float | None = None
    revoked: bool = False
    enterprise_install: bool = False
    # The refresh token that can rotate this access token (token rotation only).
    refresh_token: str | None = None

    @property
    def scope_header(self) -> str:
        return ",".join(sorted(self.scopes or ()))


@attrs.define
class RequestRecord:
    """One request that reached the fake's Web API (including refused and rate-limited ones)."""

    method: str
    http_method: str
    token: str | None
    params: dict[str, Any]
    headers: dict[str, str]
    status: int = 200
    ok: bool | None = None
    error: str | None = None
    at: float = 0.0
