"""Telegram updates (through Telethon's events) as the bridge's neutral remote events.

Remote ids: a private chat is "<own user id>:<other user id>" (one portal per linked
account), a group or channel its marked id ("-123", "-100123"), a person their user id,
a message its id in that chat, a reaction "<message id>:<user id>:<emoji>".
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ...core.media import MediaRefused, Refusal
from ..base import (
    Attachment,
    RemoteEdit,
    RemoteEvent,
    RemoteMessage,
    RemoteReaction,
    RemoteRead,
    RemoteRedaction,
    RemoteRoom,
    RemoteTyping,
    RemoteUser,
)
from ..lazy import lazy
from .formatting import to_matrix

if TYPE_CHECKING:
    from telethon import errors, events, utils
    from telethon.tl import types

    from .connector import TelegramConnector, TgSession
else:
    # Telethon is imported when the first session opens.
    errors, events, utils = lazy("telethon.errors"), lazy("telethon.events"), lazy(
        "telethon.utils")
    types = lazy("telethon.tl.types")

log = logging.getLogger("relayforge.telegram.events")
GENERAL_TOPIC = 1


def private_room_id(own: int, other: int) -> str:
    return f"{own}:{other}"


def display_name(entity: Any) -> str:
    if isinstance(entity, types.User):
        return " ".join(n for n in (entity.first_name, entity.last_name) if n) or str(
            entity.id)
    return getattr(entity, "title", None) or str(getattr(entity, "id", "?"))


class TelegramEvents:
    def __init__(self, connector: TelegramConnector) -> None:
        self.c = connector

    def register(self, session: TgSession) -> None:
        client = session.client
        client.add_event_handler(lambda e: self._message(session, e), events.NewMessage())
        client.add_event_handler(lambda e: self._edited(session, e), events.MessageEdited())
        client.add_event_handler(lambda e: self._deleted(session, e), events.MessageDeleted())
        client.add_event_handler(lambda e: self._raw(session, e), events.Raw())

    async def _emit(self, event: RemoteEvent) -> None:
        assert self.c.sink is not None
        try:
            await self.c.sink.handle_remote_event(event)
        except Exception:
            log.exception("Could not bridge a Telegram event into Matrix")

    # ---- rooms and people ------------------------------------------------------------------

    async def room(self, session: TgSession, peer: Any) -> RemoteRoom:
        if isinstance(peer, types.PeerUser):
            entity = await self._entity(session, peer)
            return RemoteRoom(private_room_id(session.user_id, peer.user_id),
                              name=display_name(entity) if entity else None, direct=True)
        entity = await self._entity(session, peer)
        return RemoteRoom(str(utils.get_peer_id(peer)),
                          name=display_name(entity) if entity else None)

    async def _entity(self, session: TgSession, peer: Any) -> Any:
        try:
            return await session.client.get_entity(peer)
        except (ValueError, TypeError) as e:
            log.debug("No entity for %s: %s", peer, e)
            return None

    async def user(self, session: TgSession, peer: Any) -> RemoteUser:
        entity = await self._entity(session, peer)
        return RemoteUser(str(utils.get_peer_id(peer) if not isinstance(peer, types.PeerUser)
                              else peer.user_id),
                          display_name=display_name(entity) if entity else None,
                          avatar=await self._avatar(session, entity))

    async def _avatar(self, session: TgSession, entity: Any) -> Attachment | None:
        """A person's profile photo, fetched once per photo (a new one has a new id)."""
        photo = getattr(entity, "photo", None)
        photo_id = getattr(photo, "photo_id", None)
        if not isinstance(entity, types.User) or photo_id is None:
            return None
        if photo_id not in session.avatars:
            session.avatars[photo_id] = None
            try:
                data = await session.client.download_profile_photo(entity, file=bytes)
            except (errors.RPCError, ValueError) as e:
                log.debug("No profile photo of %s: %s", entity.id, e)
                data = None
            if isinstance(data, bytes) and len(data) <= self.c.media.limits.max_bytes:
                session.avatars[photo_id] = Attachment("avatar.jpg", "image/jpeg", data)
        return session.avatars[photo_id]

    def _base(self, session: TgSession, room: RemoteRoom, sender: RemoteUser,
              message: Any) -> dict[str, Any]:
        date = getattr(message, "date", None)
        return {"room": room, "sender": sender, "receiver": session.owner,
                "persona_id": session.persona_id,
                "timestamp_ms": int(date.timestamp() * 1000) if date else None}

    async def _sender_of(self, session: TgSession, message: Any) -> RemoteUser:
        peer = message.from_id or (message.peer_id if not message.out else
                                   types.PeerUser(session.user_id))
        if isinstance(message.peer_id, types.PeerUser) and message.from_id is None:
            peer = types.PeerUser(session.user_id if message.out else message.peer_id.user_id)
        return await self.user(session, peer)

    # ---- messages ----------------------------------------------------------------------------

    async def _message(self, session: TgSession, event: events.NewMessage.Event) -> None:
        await self.on_history(session, event.message)

    async def on_history(self, session: TgSession, message: Any) -> None:
        """A message, new or caught up."""
        for event in await self.convert(session, message):
            await self._emit(event)

    async def convert(self, session: TgSession, message: Any) -> list[RemoteEvent]:
        """A message as the events it makes in Matrix (first its topic's root, when the
        topic is new here), or none for the bridge's own. The live path emits them; history
        returns them to the core."""
        room = await self.room(session, message.peer_id)
        if message.out and await session.sent_by_bridge(room.remote_id, message.id):
            return []
        sender = await self._sender_of(session, message)
        session.remember(message.id, room.remote_id, sender.remote_id)
        events, thread_root, reply_to = await self._thread(session, room, message)
        html, mentions = to_matrix(message.message or "", message.entities, self.c.ghost_of)
        attachment, refused = await self._media(session, message)
        events.append(RemoteMessage(
            **self._base(session, room, sender, message), message_id=str(message.id),
            text=message.message or (attachment.name if attachment else ""), html=html,
            reply_to=reply_to, thread_root=thread_root, mentions=mentions,
            attachment=attachment, file_refused=refused))
        return events

    async def _thread(self, session: TgSession, room: RemoteRoom, message: Any
                      ) -> tuple[list[RemoteEvent], str | None, str | None]:
        """(the topic's root if it is new here; the topic's first message, for a forum
        topic other than General; the message replied to, if any)."""
        header = message.reply_to
        if not isinstance(header, types.MessageReplyHeader):
            return [], None, None
        if header.forum_topic:
            topic = header.reply_to_top_id or header.reply_to_msg_id
            reply = str(header.reply_to_msg_id) if header.reply_to_top_id else None
            if topic == GENERAL_TOPIC:
                return [], None, reply
            date = getattr(message, "date", None)
            root = await self.c.topic_root_events(
                session, room, message.peer_id, topic,
                timestamp_ms=int(date.timestamp() * 1000) if date else None)
            return root, str(topic), reply
        return [], None, str(header.reply_to_msg_id) if header.reply_to_msg_id else None

    async def _media(self, session: TgSession, message: Any
                     ) -> tuple[Attachment | None, str | None]:
        media = message.media
        if media is None or not isinstance(media, types.MessageMediaPhoto
                                           | types.MessageMediaDocument):
            return None, None
        file = message.file
        name = (file.name if file and file.name else None) or (
            "photo.jpg" if isinstance(media, types.MessageMediaPhoto) else "file")
        mimetype = (file.mime_type if file and file.mime_type else None) or (
            "image/jpeg" if isinstance(media, types.MessageMediaPhoto)
            else "application/octet-stream")
        limit = self.c.media.limits.max_bytes
        if file and file.size and file.size > limit:
            refused = MediaRefused(Refusal.TOO_LARGE, "it is larger than the bridge's limit of "
                                   f"{limit // (1024 * 1024)} MiB")
            return None, refused.notice(name)
        data = await session.client.download_media(message, file=bytes)
        if not isinstance(data, bytes):
            return None, None
        return Attachment(name, mimetype, data), None

    async def _edited(self, session: TgSession, event: events.MessageEdited.Event) -> None:
        message = event.message
        room = await self.room(session, message.peer_id)
        if message.out and session.edited_by_bridge(room.remote_id, message.id):
            return
        sender = await self._sender_of(session, message)
        html, _ = to_matrix(message.message or "", message.entities, self.c.ghost_of)
        await self._emit(RemoteEdit(**self._base(session, room, sender, message),
                                    target_id=str(message.id), text=message.message or "",
                                    html=html))

    async def _deleted(self, session: TgSession, event: events.MessageDeleted.Event) -> None:
        for msg_id in event.deleted_ids:
            if event.chat_id is not None and not isinstance(event._chat_peer,
                                                             types.PeerUser):
                room = await self.room(session, event._chat_peer)
            else:
                # Private chats and basic groups name no chat: the message's own tells.
                remote = session.room_of(msg_id)
                if remote is None:
                    log.debug("Deleted Telegram message %s of an unknown chat", msg_id)
                    continue
                room = RemoteRoom(remote, direct=":" in remote)
            if session.deleted_by_bridge(room.remote_id, msg_id):
                continue
            await self._emit(RemoteRedaction(
                room=room, sender=RemoteUser(session.author_of(room.remote_id, msg_id)),
                receiver=session.owner,
                persona_id=session.persona_id, target_id=str(msg_id)))

    # ---- reactions, typing, topics -----------------------------------------------------------

    async def _raw(self, session: TgSession, update: Any) -> None:
        if isinstance(update, types.UpdateMessageReactions):
            await self._reactions(session, update)
        elif isinstance(update, types.UpdateUserTyping):
            room = await self.room(session, types.PeerUser(update.user_id))
            typing = not isinstance(update.action, types.SendMessageCancelAction)
            await self._emit(RemoteTyping(
                room=room, sender=await self.user(session, types.PeerUser(update.user_id)),
                receiver=session.owner, persona_id=session.persona_id, typing=typing))
        elif isinstance(update, types.UpdateReadHistoryOutbox) and isinstance(
                update.peer, types.PeerUser):
            # The other person read this account's messages up to max_id.
            room = await self.room(session, update.peer)
            await self._emit(RemoteRead(
                room=room, sender=await self.user(session, update.peer),
                receiver=session.owner, persona_id=session.persona_id,
                target_id=str(update.max_id)))
        elif isinstance(update, types.UpdateNewChannelMessage) and isinstance(
                update.message, types.MessageService) and isinstance(
                update.message.action, types.MessageActionTopicCreate):
            message = update.message
            room = await self.room(session, message.peer_id)
            await self.c.topic_root(session, room, message.peer_id, message.id,
                                    title=message.action.title)

    async def _reactions(self, session: TgSession, update: types.UpdateMessageReactions
                         ) -> None:
        room = await self.room(session, update.peer)
        for event in await self.reaction_events(session, room, update.msg_id,
                                                update.reactions):
            await self._emit(event)

    async def reaction_events(self, session: TgSession, room: RemoteRoom, msg_id: int,
                              reactions: Any, timestamp_ms: int | None = None
                              ) -> list[RemoteEvent]:
        """The reactions a message has now (Telegram always tells them all), as what
        changed since the session last saw them: new ones, and ones taken back."""
        now: dict[str, str] = {}
        for reaction in getattr(reactions, "recent_reactions", None) or []:
            if isinstance(reaction.reaction, types.ReactionEmoji) and isinstance(
                    reaction.peer_id, types.PeerUser):
                user = reaction.peer_id.user_id
                key = f"{msg_id}:{user}:{reaction.reaction.emoticon}"
                now[key] = str(user)
        before = session.reactions.get((room.remote_id, msg_id), {})
        session.reactions[(room.remote_id, msg_id)] = now
        events: list[RemoteEvent] = []
        for key, user in now.items():
            if key in before or session.reacted_by_bridge(room.remote_id, key):
                continue
            events.append(RemoteReaction(
                room=room, sender=await self.user(session, types.PeerUser(int(user))),
                receiver=session.owner, persona_id=session.persona_id, reaction_id=key,
                target_id=str(msg_id), key=key.split(":", 2)[2], timestamp_ms=timestamp_ms))
        for key, user in before.items():
            if key not in now and not session.reacted_by_bridge(room.remote_id, "-" + key):
                events.append(RemoteRedaction(
                    room=room, sender=RemoteUser(user), receiver=session.owner,
                    persona_id=session.persona_id, target_id=key))
        return events
