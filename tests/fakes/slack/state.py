"""The fake Slack's rules: who exists, who can see what, which token is good, and what each
change to the world does (store it, then hand the matching events to the router)."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from . import events as ev
from .models import (
    Activity,
    Channel,
    Enterprise,
    Message,
    SlackApp,
    SlackError,
    SlackFile,
    Team,
    Token,
    User,
    format_ts,
    new_id,
)
from .render import png, rich_text

Deliveries = list["asyncio.Future[Any]"]
Emit = Callable[..., Deliveries]

# Slack refuses longer messages with msg_too_long.
MAX_TEXT = 40_000


def _no_emit(*_args: Any, **_kwargs: Any) -> Deliveries:
    return []


class SlackState:
    def __init__(self) -> None:
        self.base_url = ""
        # Tests move the clock forward to expire rotating tokens without sleeping.
        self.time_offset = 0.0
        self.enterprises: dict[str, Enterprise] = {}
        self.teams: dict[str, Team] = {}
        self.users: dict[str, User] = {}
        self.channels: dict[str, Channel] = {}
        self.files: dict[str, SlackFile] = {}
        self.apps: dict[str, SlackApp] = {}
        self.tokens: dict[str, Token] = {}
        self.refresh_tokens: dict[str, Token] = {}
        self.used_refresh_tokens: set[str] = set()
        self.emit: Emit = _no_emit
        self.activity = Activity()
        self._last_event_micros = 0

    # ---- time ------------------------------------------------------------------------------

    def now(self) -> float:
        return time.time() + self.time_offset

    def next_ts(self, channel: Channel) -> str:
        # Unique and increasing per channel, like Slack's; close to wall-clock time.
        micros = max(int(self.now() * 1_000_000), channel.last_micros + 1)
        channel.last_micros = micros
        return format_ts(micros)

    def event_ts(self) -> str:
        micros = max(int(self.now() * 1_000_000), self._last_event_micros + 1)
        self._last_event_micros = micros
        return format_ts(micros)

    # ---- building the world ----------------------------------------------------------------

    def create_app(self, name: str = "RelayForge", **settings: Any) -> SlackApp:
        app_id = new_id("A")
        app = SlackApp(
            id=app_id, name=name,
            client_id=f"{secrets.randbelow(10**12)}.{secrets.randbelow(10**12)}",
            client_secret=secrets.token_hex(16), signing_secret=secrets.token_hex(16),
            verification_token=secrets.token_urlsafe(18),
            app_token=f"xapp-1-{app_id}-{secrets.randbelow(10**12)}-{secrets.token_hex(32)}",
            **settings)
        self.apps[app.id] = app
        self.tokens[app.app_token] = Token(value=app.app_token, kind="app", app=app,
                                           user=None, scopes=frozenset({"connections:write"}),
                                           created=self.now())
        return app

    def create_enterprise(self, name: str, domain: str | None = None) -> Enterprise:
        enterprise = Enterprise(id=new_id("E"), name=name,
                                domain=domain or name.lower().replace(" ", "-"))
        self.enterprises[enterprise.id] = enterprise
        return enterprise

    def create_team(self, name: str, domain: str | None = None,
                    enterprise: Enterprise | None = None) -> Team:
        team = Team(id=new_id("T"), name=name, domain=domain or name.lower().replace(" ", "-"),
                    enterprise=enterprise)
        # A few custom emoji, as most workspaces have; one is an alias like Slack's.
        for emoji_name, colour in (("partyparrot", (200, 40, 160)), ("shipit", (40, 160, 90))):
            team.emoji_images[emoji_name] = png(16, 16, colour)
            # Relative until rendered: the server's URL may not be known yet.
            team.emoji[emoji_name] = f"/emoji/{team.id}/{emoji_name}.png"
        team.emoji["squirrel2"] = "alias:shipit"
        self.teams[team.id] = team
        return team

    def create_user(self, team: Team, name: str, *, display_name: str | None = None,
                    real_name: str | None = None, email: str | None = None,
                    avatar: bytes | None = None, user_id: str | None = None,
                    is_admin: bool = False) -> User:
        # Enterprise Grid people have W-prefixed IDs.
        prefix = "W" if team.enterprise is not None else "U"
        avatar = avatar if avatar is not None else png(8, 8, tuple(secrets.token_bytes(3)))
        user = User(id=user_id or new_id(prefix), team=team, name=name,
                    real_name=real_name if real_name is not None else name.title(),
                    display_name=display_name if display_name is not None else name,
                    email=email or f"{name}@{team.domain}.example", avatar=avatar,
                    avatar_hash=hashlib.sha1(avatar).hexdigest()[:12], is_admin=is_admin,
                    updated=int(self.now()))
        self.users[user.id] = user
        return user

    def create_channel(self, team: Team, name: str, members: Iterable[User], *,
                       private: bool = False, creator: User | None = None,
                       topic: str = "", purpose: str = "", is_general: bool = False) -> Channel:
        member_ids = [m.id for m in members]
        creator_id = creator.id if creator else (member_ids[0] if member_ids else "")
        channel = Channel(id=new_id("C"), team=team, kind="private" if private else "public",
                          name=name, members=member_ids, creator=creator_id,
                          created=int(self.now()), topic=topic, purpose=purpose,
                          is_general=is_general)
        self.channels[channel.id] = channel
        return channel

    def open_dm(self, a: User, b: User) -> Channel:
        for channel in self.channels.values():
            if channel.kind == "im" and sorted(channel.members) == sorted({a.id, b.id}):
                return channel
        channel = Channel(id=new_id("D"), team=a.team, kind="im", name="",
                          members=sorted({a.id, b.id}), creator=a.id, created=int(self.now()))
        self.channels[channel.id] = channel
        return channel

    def open_group_dm(self, users: Sequence[User]) -> Channel:
        ids = [u.id for u in users]
        for channel in self.channels.values():
            if channel.kind == "mpim" and sorted(channel.members) == sorted(ids):
                return channel
        name = "mpdm-" + "--".join(u.name for u in users) + "-1"
        channel = Channel(id=new_id("C"), team=users[0].team, kind="mpim", name=name,
                          members=ids, creator=ids[0], created=int(self.now()))
        self.channels[channel.id] = channel
        return channel

    def issue_token(self, user: User, app: SlackApp, scopes: Iterable[str] | None = None, *,
                    rotation: bool | None = None, expires_in: int | None = None,
                    enterprise_install: bool = False) -> Token:
        rotation = app.token_rotation if rotation is None else rotation
        expires_in = app.token_lifetime if expires_in is None else expires_in
        if rotation:
            value = f"xoxe.xoxp-1-{secrets.token_hex(40)}"
        else:
            value = (f"xoxp-{secrets.randbelow(10**12)}-{secrets.randbelow(10**12)}-"
                     f"{secrets.randbelow(10**12)}-{secrets.token_hex(16)}")
        token = Token(value=value, kind="user", app=app, user=user,
                      scopes=None if scopes is None else frozenset(scopes),
                      created=self.now(), enterprise_install=enterprise_install)
        if rotation:
            token.expires_at = self.now() + expires_in
            token.refresh_token = f"xoxe-1-{secrets.token_hex(40)}"
            self.refresh_tokens[token.refresh_token] = token
        self.tokens[value] = token
        return token

    # ---- looking things up -----------------------------------------------------------------

    def check_token(self, value: str | None, *, kind: str = "user") -> Token:
        """Slack's own order of refusals: none, unknown, revoked, expired, deactivated."""
        if not value:
            raise SlackError("not_authed")
        token = self.tokens.get(value)
        if token is None:
            raise SlackError("invalid_auth")
        if token.revoked:
            raise SlackError("token_revoked")
        if token.expires_at is not None and self.now() >= token.expires_at:
            raise SlackError("token_expired")
        if token.user is not None and token.user.deleted:
            raise SlackError("account_inactive")
        if token.kind != kind:
            raise SlackError("not_allowed_token_type")
        return token

    def team_of(self, team_id: str) -> Team:
        team = self.teams.get(team_id)
        if team is None:
            raise SlackError("team_not_found")
        return team

    def same_org(self, viewer: User, team: Team) -> bool:
        if team in viewer.teams:
            return True
        enterprise = viewer.team.enterprise
        return enterprise is not None and team.enterprise is enterprise

    def can_see_user(self, viewer: User, user: User) -> bool:
        return any(self.same_org(viewer, team) for team in user.teams)

    def can_see(self, viewer: User, channel: Channel) -> bool:
        if channel.kind == "public":
            return channel.team in viewer.teams
        return viewer.id in channel.members

    def channel_for(self, viewer: User, channel_id: str | None) -> Channel:
        channel = self.channels.get(channel_id or "")
        if channel is None and channel_id:
            # Slack also takes a channel's name ("#general" or "general").
            name = channel_id.removeprefix("#")
            channel = next((c for c in self.channels.values()
                            if c.name == name and c.kind in ("public", "private")
                            and self.can_see(viewer, c)), None)
        if channel is None and channel_id in self.users:
            # A user token may name a person instead of a DM: Slack posts into their DM.
            other = self.users[channel_id]
            if self.can_see_user(viewer, other):
                return self.open_dm(viewer, other)
        if channel is None or not self.can_see(viewer, channel):
            raise SlackError("channel_not_found")
        return channel

    def user_for(self, viewer: User, user_id: str | None) -> User:
        user = self.users.get(user_id or "")
        if user is None or not self.can_see_user(viewer, user):
            raise SlackError("user_not_found")
        return user

    def file_for(self, viewer: User, file_id: str | None) -> SlackFile:
        file = self.files.get(file_id or "")
        if file is None or not self.can_see_file(viewer, file):
            raise SlackError("file_not_found")
        return file

    def can_see_file(self, viewer: User, file: SlackFile) -> bool:
        if file.user is viewer:
            return True
        return any(self.can_see(viewer, self.channels[c]) for c in file.channels
                   if c in self.channels)

    def installations(self, team: Team) -> list[Token]:
        """Live user tokens per app that cover `team`: these authorize event deliveries."""
        found = []
        for token in self.tokens.values():
            if token.kind != "user" or token.revoked or token.user is None:
                continue
            if token.user.deleted:
                continue
            if team in token.user.teams or (token.enterprise_install
                                            and team.enterprise is token.user.team.enterprise):
                found.append(token)
        return found

    # ---- changing the world ----------------------------------------------------------------

    def _require_member(self, user: User, channel: Channel) -> None:
        if not self.can_see(user, channel):
            raise SlackError("channel_not_found")
        if user.id not in channel.members:
            raise SlackError("not_in_channel")
        if channel.is_archived:
            raise SlackError("is_archived")

    def post_message(self, user: User, channel: Channel, text: str, *,
                     thread_ts: str | None = None, reply_broadcast: bool = False,
                     blocks: list[dict[str, Any]] | None = None,
                     files: Sequence[SlackFile] = (), from_client: bool = False,
                     subtype: str | None = None, client_msg_id: str | None = None
                     ) -> tuple[Message, Deliveries]:
        """`from_client` marks what a person typed in a Slack client (it gets rich_text
        blocks and a client_msg_id); API posts carry only what the caller sent, a
        client_msg_id included (kept and shown in history, not deduplicated, like Slack)."""
        self._require_member(user, channel)
        if not text and not blocks and not files:
            raise SlackError("no_text")
        if len(text) > MAX_TEXT:
            raise SlackError("msg_too_long")
        parent = None
        if thread_ts:
            parent = channel.find(thread_ts)
            if parent is None:
                raise SlackError("thread_not_found")
            if parent.is_reply:
                # Slack threads a reply to a reply under the original parent.
                parent = channel.find(parent.thread_ts)
                assert parent is not None
        message = Message(ts=self.next_ts(channel), user=user.id, team_id=user.team.id,
                          text=text, thread_ts=parent.ts if parent else None,
                          blocks=blocks if blocks is not None or not from_client
                          else (rich_text(text) if text else None),
                          files=list(files), subtype=subtype,
                          client_msg_id=client_msg_id or (str(uuid.uuid4()) if from_client
                                                          else None),
                          reply_broadcast=bool(parent and reply_broadcast))
        if message.files and message.subtype is None:
            message.subtype = "file_share"
        if message.reply_broadcast:
            message.subtype = "thread_broadcast"
        if parent is not None and parent.thread_ts is None:
            parent.thread_ts = parent.ts
        channel.messages.append(message)
        for file in message.files:
            if channel.id not in file.channels:
                file.channels.append(channel.id)
        event = ev.message_event(message, channel, self.base_url)
        return message, self.emit(channel.team, event, channel=channel)

    def edit_message(self, user: User, channel: Channel, ts: str | None, text: str,
                     blocks: list[dict[str, Any]] | None = None, *, from_client: bool = False
                     ) -> tuple[Message, Deliveries]:
        if not self.can_see(user, channel):
            raise SlackError("channel_not_found")
        message = channel.find(ts)
        if message is None or message.subtype == "tombstone":
            raise SlackError("message_not_found")
        if message.user != user.id:
            raise SlackError("cant_update_message")
        if len(text) > MAX_TEXT:
            raise SlackError("msg_too_long")
        previous = ev.snapshot(message, channel, self.base_url)
        edit_ts = self.next_ts(channel)
        message.text = text
        if blocks is not None:
            message.blocks = blocks
        elif from_client:
            message.blocks = rich_text(text)
        message.edited = {"user": user.id, "ts": edit_ts}
        event = ev.message_changed(message, previous, channel, edit_ts, self.base_url)
        return message, self.emit(channel.team, event, channel=channel)

    def delete_message(self, user: User | None, channel: Channel, ts: str | None
                       ) -> Deliveries:
        if user is not None and not self.can_see(user, channel):
            raise SlackError("channel_not_found")
        message = channel.find(ts)
        if message is None or message.subtype == "tombstone":
            raise SlackError("message_not_found")
        if user is not None and message.user != user.id and not user.is_admin:
            raise SlackError("cant_delete_message")
        previous = ev.snapshot(message, channel, self.base_url)
        event_ts = self.next_ts(channel)
        if not message.is_reply and channel.replies(message.ts):
            # A parent with replies stays as a tombstone so the thread survives.
            message.subtype, message.text, message.blocks = "tombstone", "This message was "\
                "deleted.", None
            message.files, message.edited, message.reactions = [], None, {}
            message.user = "USLACKBOT"
            event = ev.message_changed(message, previous, channel, event_ts, self.base_url)
        else:
            channel.messages.remove(message)
            event = ev.message_deleted(previous, channel, event_ts)
        return self.emit(channel.team, event, channel=channel)

    def react(self, user: User, channel: Channel, ts: str | None, name: str, *, add: bool
              ) -> Deliveries:
        if not self.can_see(user, channel):
            raise SlackError("channel_not_found")
        message = channel.find(ts)
        if message is None:
            raise SlackError("message_not_found")
        if not name or name.startswith(":") or name.endswith(":") or " " in name:
            raise SlackError("invalid_name")
        users = message.reactions.setdefault(name, [])
        if add:
            if user.id in users:
                raise SlackError("already_reacted")
            users.append(user.id)
        else:
            if user.id not in users:
                if not users:
                    del message.reactions[name]
                raise SlackError("no_reaction")
            users.remove(user.id)
            if not users:
                del message.reactions[name]
        event = ev.reaction_event(user, message, channel, name, added=add,
                                  event_ts=self.event_ts())
        return self.emit(channel.team, event, channel=channel)

    def join(self, user: User, channel: Channel) -> tuple[bool, Deliveries]:
        if not self.can_see(user, channel):
            raise SlackError("channel_not_found")
        if channel.kind != "public":
            raise SlackError("method_not_supported_for_channel_type")
        if channel.is_archived:
            raise SlackError("is_archived")
        if user.id in channel.members:
            return False, []
        channel.members.append(user.id)
        deliveries = self.emit(channel.team, ev.member_joined(user, channel, self.event_ts()),
                               channel=channel)
        message = Message(ts=self.next_ts(channel), user=user.id, team_id=user.team.id,
                          text=f"<@{user.id}> has joined the channel", subtype="channel_join")
        channel.messages.append(message)
        deliveries += self.emit(channel.team, ev.message_event(message, channel, self.base_url),
                                channel=channel)
        return True, deliveries

    def update_user(self, user: User, **changes: Any) -> Deliveries:
        for key, value in changes.items():
            if key == "avatar":
                user.avatar = value
                user.avatar_hash = hashlib.sha1(value).hexdigest()[:12]
            elif hasattr(user, key):
                setattr(user, key, value)
            else:
                raise TypeError(f"users have no {key}")
        user.updated = int(self.now())
        deliveries: Deliveries = []
        for team in user.teams:
            deliveries += self.emit(team, ev.user_change(user, self.base_url, self.event_ts()))
        return deliveries

    def revoke(self, token: Token) -> Deliveries:
        token.revoked = True
        if token.refresh_token:
            self.refresh_tokens.pop(token.refresh_token, None)
        if token.user is None:
            return []
        event = {"type": "tokens_revoked", "tokens": {"oauth": [token.user.id], "bot": []},
                 "event_ts": self.event_ts()}
        # The app hears about its own revoked token even though it no longer authorizes it.
        return self.emit(token.user.team, event, only_app=token.app, authorizing=token)
