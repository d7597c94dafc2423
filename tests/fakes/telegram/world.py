"""The fake's Telegram: people, chats, each person's message box with its pts, and the
update each change makes. Objects are Telethon's own TL types."""

from __future__ import annotations

import itertools
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from telethon.tl import types

_ids = itertools.count(1_000_001)


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


@dataclass
class Person:
    id: int
    first_name: str
    phone: str
    username: str | None = None
    last_name: str | None = None
    password: str | None = None  # the cloud password (2FA), checked through SRP
    access_hash: int = field(default_factory=lambda: secrets.randbits(62))
    pts: int = 0
    next_message_id: int = 1
    # The person's view of private chats and basic groups: their message box.
    box: list[tuple[int, types.TypeUpdate]] = field(default_factory=list)  # (pts, update)
    messages: dict[int, types.Message] = field(default_factory=dict)
    banned: bool = False
    photo_id: int | None = None  # a StoredFile of the fake: the profile picture
    home_dc: int = 2  # the data centre the account lives in

    def tl(self, viewer: int | None = None) -> types.User:
        photo = (types.UserProfilePhoto(photo_id=self.photo_id, dc_id=2)
                 if self.photo_id else None)
        return types.User(id=self.id, is_self=viewer == self.id, access_hash=self.access_hash,
                          first_name=self.first_name, last_name=self.last_name,
                          username=self.username, photo=photo,
                          phone=self.phone if viewer == self.id else None)


@dataclass
class Group:
    """A basic group (`channel` False) or a supergroup/channel with its own pts."""

    id: int
    title: str
    members: set[int]
    channel: bool = False
    broadcast: bool = False
    forum: bool = False
    admins: set[int] = field(default_factory=set)
    access_hash: int = field(default_factory=lambda: secrets.randbits(62))
    username: str | None = None
    reactions: list[str] | None = None  # None: every emoji; else only these
    pts: int = 0
    next_message_id: int = 1
    box: list[tuple[int, types.TypeUpdate]] = field(default_factory=list)
    messages: dict[int, types.Message] = field(default_factory=dict)
    topics: dict[int, str] = field(default_factory=dict)  # top message id -> title

    def peer(self) -> types.TypePeer:
        return types.PeerChannel(self.id) if self.channel else types.PeerChat(self.id)

    def tl(self, viewer: int | None = None) -> types.TypeChat:
        if not self.channel:
            return types.Chat(id=self.id, title=self.title, photo=types.ChatPhotoEmpty(),
                              participants_count=len(self.members), date=now(), version=1)
        rights = None
        if self.broadcast and viewer not in self.admins:
            rights = types.ChatBannedRights(until_date=None, send_messages=True,
                                            send_plain=True, send_media=True)
        return types.Channel(id=self.id, title=self.title, photo=types.ChatPhotoEmpty(),
                             date=now(), access_hash=self.access_hash, username=self.username,
                             megagroup=not self.broadcast, broadcast=self.broadcast,
                             forum=self.forum, creator=viewer in self.admins,
                             left=viewer not in self.members,
                             default_banned_rights=rights,
                             participants_count=len(self.members))

    def may_post(self, user_id: int) -> bool:
        return user_id in self.members and (not self.broadcast or user_id in self.admins)


@dataclass
class StoredFile:
    id: int
    data: bytes
    mime_type: str
    name: str
    access_hash: int = field(default_factory=lambda: secrets.randbits(62))


def new_id() -> int:
    return next(_ids)


def reply_header(reply_to: Any, forum: bool) -> types.MessageReplyHeader | None:
    """The reply header of a message sent with `reply_to` (InputReplyToMessage)."""
    if not isinstance(reply_to, types.InputReplyToMessage):
        return None
    top = reply_to.top_msg_id
    if forum and top is None:
        return types.MessageReplyHeader(reply_to_msg_id=reply_to.reply_to_msg_id,
                                        forum_topic=True)
    return types.MessageReplyHeader(reply_to_msg_id=reply_to.reply_to_msg_id,
                                    reply_to_top_id=top, forum_topic=forum or None)
