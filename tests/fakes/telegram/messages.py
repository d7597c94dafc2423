"""The fake's message methods: dialogs, sending, editing, deleting, reactions, media, typing,
reading, topics, and the updates each makes (with pts, and getDifference to catch up)."""

from __future__ import annotations

import hashlib
import struct
from datetime import datetime
from typing import TYPE_CHECKING, Any

from telethon.tl import types

from .mtproto import Connection, RpcError
from .world import Group, Person, StoredFile, new_id, now, reply_header

if TYPE_CHECKING:
    from .server import FakeTelegram

BOOL_TRUE = struct.pack("<I", 0x997275B5)
Target = Person | Group


class MessageApi:
    """Mixed into FakeTelegram."""

    # ---- where things go ---------------------------------------------------------------------

    def _target(self: FakeTelegram, peer: Any, user: int) -> Target:
        if isinstance(peer, types.InputPeerUser | types.InputPeerSelf):
            return self.person_of_input(peer, user)
        chat_id = getattr(peer, "chat_id", None) or getattr(peer, "channel_id", None)
        group = self.groups.get(chat_id or 0)
        if group is None or user not in group.members:
            raise RpcError(400, "CHANNEL_INVALID" if hasattr(peer, "channel_id")
                           else "PEER_ID_INVALID")
        return group

    def _peer_for(self, target: Target, viewer: int, sender: int) -> types.TypePeer:
        if isinstance(target, Group):
            return target.peer()
        # A private chat is named by the other person.
        return types.PeerUser(target.id if viewer == sender else sender)

    def _entities_of(self: FakeTelegram, target: Target, viewer: int
                     ) -> tuple[list[Any], list[Any]]:
        users = [p.tl(viewer) for p in self.people.values()]
        chats = [g.tl(viewer) for g in self.groups.values() if viewer in g.members]
        return users, chats

    async def _push(self: FakeTelegram, user_id: int, update: Any,
                    skip: Connection | None = None) -> None:
        users, chats = self._entities_of(self.people[user_id], user_id)
        for connection in self.online(user_id):
            if connection is not skip:
                await connection.send(types.Updates(updates=[update], users=users,
                                                    chats=chats, date=now(), seq=0))

    def _box_add(self, person: Person, make: Any) -> Any:
        person.pts += 1
        update = make(person.pts)
        person.box.append((person.pts, update))
        return update

    def _channel_add(self, group: Group, make: Any) -> Any:
        group.pts += 1
        update = make(group.pts)
        group.box.append((group.pts, update))
        return update

    # ---- the other side: people on Telegram ------------------------------------------------

    async def send_as(self: FakeTelegram, sender: Person, target: Target, text: str, *,
                      entities: list[Any] | None = None, reply_to: int | None = None,
                      topic: int | None = None, media: Any = None,
                      date: datetime | None = None) -> dict[int, int]:
        """`sender` writes into a private chat (target: the other person) or a group, now or
        at `date` (history written before a test's bridge was there). Returns each member's
        id of the new message (private chats and basic groups number messages per
        person)."""
        request_reply = (types.InputReplyToMessage(reply_to_msg_id=reply_to or topic,
                                                   top_msg_id=topic if reply_to else None)
                         if (reply_to or topic) else None)
        ids, _ = await self._deliver(sender.id, target, text, entities, request_reply, media,
                                     date=date)
        return ids

    async def _deliver(self: FakeTelegram, sender: int, target: Target, text: str,
                       entities: list[Any] | None, reply_to: Any, media: Any,
                       requester: Connection | None = None, random_id: int | None = None,
                       date: datetime | None = None) -> tuple[dict[int, int], Any]:
        ids: dict[int, int] = {}
        answer_updates: list[Any] = []
        forum = isinstance(target, Group) and target.forum
        header = reply_header(reply_to, forum)
        if isinstance(target, Group) and target.channel:
            msg_id = target.next_message_id
            target.next_message_id += 1
            message = types.Message(
                id=msg_id, peer_id=target.peer(), date=date or now(), message=text,
                from_id=None if target.broadcast else types.PeerUser(sender),
                post=target.broadcast or None, entities=entities, reply_to=header,
                media=media)
            target.messages[msg_id] = message
            update = self._channel_add(target, lambda pts: types.UpdateNewChannelMessage(
                message, pts, 1))
            if forum and header is None and msg_id not in target.topics:
                pass
            for member in target.members:
                ids[member] = msg_id
                await self._push(member, update, skip=requester)
            answer_updates.append(update)
        else:
            recipients = ([sender, target.id] if isinstance(target, Person)
                          else sorted(target.members))
            for member in dict.fromkeys(recipients):
                person = self.people[member]
                msg_id = person.next_message_id
                person.next_message_id += 1
                member_header = header
                if header is not None and member != sender:
                    own = self.copy_id(sender, header.reply_to_msg_id, member)
                    member_header = types.MessageReplyHeader(reply_to_msg_id=own)
                message = types.Message(
                    id=msg_id, peer_id=self._peer_for(target, member, sender),
                    date=date or now(),
                    message=text, out=member == sender or None,
                    from_id=types.PeerUser(sender), entities=entities,
                    reply_to=member_header, media=media)
                person.messages[msg_id] = message
                ids[member] = msg_id
                update = self._box_add(person, lambda pts, m=message: types.UpdateNewMessage(
                    m, pts, 1))
                if member == sender:
                    answer_updates.append(update)
                await self._push(member, update, skip=requester if member == sender else None)
        self.copies.append(ids)
        if random_id is not None:
            answer_updates.insert(0, types.UpdateMessageID(ids[sender], random_id))
        return ids, answer_updates

    def copy_id(self, owner: int, msg_id: int, viewer: int) -> int:
        """The id `viewer` has for the message `owner` knows as `msg_id`."""
        for ids in self.copies:  # type: ignore[attr-defined]
            if ids.get(owner) == msg_id:
                return ids.get(viewer, msg_id)
        return msg_id

    async def edit_as(self: FakeTelegram, sender: Person, target: Target, msg_id: int,
                      text: str, entities: list[Any] | None = None) -> None:
        await self._edit(sender.id, target, msg_id, text, entities)

    async def _edit(self: FakeTelegram, sender: int, target: Target, msg_id: int, text: str,
                    entities: list[Any] | None, requester: Connection | None = None
                    ) -> list[Any]:
        answer: list[Any] = []
        if isinstance(target, Group) and target.channel:
            message = target.messages.get(msg_id)
            if message is None:
                raise RpcError(400, "MESSAGE_ID_INVALID")
            if message.from_id != types.PeerUser(sender):
                raise RpcError(403, "MESSAGE_AUTHOR_REQUIRED")
            message.message, message.entities, message.edit_date = text, entities, now()
            update = self._channel_add(target, lambda pts: types.UpdateEditChannelMessage(
                message, pts, 1))
            for member in target.members:
                await self._push(member, update, skip=requester)
            return [update]
        for member, own_id in self._copies_of(sender, msg_id).items():
            person = self.people[member]
            message = person.messages.get(own_id)
            if message is None:
                continue
            if message.from_id != types.PeerUser(sender):
                raise RpcError(403, "MESSAGE_AUTHOR_REQUIRED")
            message.message, message.entities, message.edit_date = text, entities, now()
            update = self._box_add(person, lambda pts, m=message: types.UpdateEditMessage(
                m, pts, 1))
            if member == sender:
                answer.append(update)
            await self._push(member, update, skip=requester if member == sender else None)
        return answer

    def _copies_of(self, owner: int, msg_id: int) -> dict[int, int]:
        for ids in self.copies:  # type: ignore[attr-defined]
            if ids.get(owner) == msg_id:
                return ids
        return {owner: msg_id}

    async def delete_as(self: FakeTelegram, sender: Person, target: Target, msg_id: int
                        ) -> None:
        await self._delete(sender.id, target, [msg_id])

    async def _delete(self: FakeTelegram, sender: int, target: Target | None, ids: list[int],
                      requester: Connection | None = None) -> Any:
        if isinstance(target, Group) and target.channel:
            for msg_id in ids:
                target.messages.pop(msg_id, None)
            update = self._channel_add(target, lambda pts: types.UpdateDeleteChannelMessages(
                target.id, ids, pts, len(ids)))
            for member in target.members:
                await self._push(member, update)
            return types.messages.AffectedMessages(update.pts, update.pts_count)
        own = self.people[sender]
        for msg_id in ids:
            for member, own_id in self._copies_of(sender, msg_id).items():
                person = self.people[member]
                if person.messages.pop(own_id, None) is None:
                    continue
                self._box_add(person, lambda pts, i=own_id: types.UpdateDeleteMessages(
                    [i], pts, 1))
                await self._push(member, person.box[-1][1],
                                 skip=requester if member == sender else None)
        return types.messages.AffectedMessages(own.pts, 1)

    async def react_as(self: FakeTelegram, person: Person, target: Target, msg_id: int,
                       emoji: str) -> None:
        await self._react(person.id, target, msg_id, emoji)

    async def _react(self: FakeTelegram, user: int, target: Target, msg_id: int,
                     emoji: str | None) -> Any:
        if isinstance(target, Group) and target.reactions is not None and (
                emoji and emoji not in target.reactions):
            raise RpcError(400, "REACTION_INVALID")
        copies = ({m: msg_id for m in target.members}
                  if isinstance(target, Group) and target.channel
                  else self._copies_of(user, msg_id))
        last = None
        for member, own_id in copies.items():
            message = (target.messages if isinstance(target, Group) and target.channel
                       else self.people[member].messages).get(own_id)
            # As Telegram does: the message keeps everyone's reactions (one each), and the
            # update carries them all, as each member sees them.
            kept = [r for r in (message.reactions.recent_reactions
                                if message is not None and message.reactions else [])
                    if r.peer_id != types.PeerUser(user)]
            if emoji:
                kept.append(types.MessagePeerReaction(
                    peer_id=types.PeerUser(user), date=now(),
                    reaction=types.ReactionEmoji(emoji)))
            counts: dict[str, int] = {}
            for r in kept:
                counts[r.reaction.emoticon] = counts.get(r.reaction.emoticon, 0) + 1
            recent = [types.MessagePeerReaction(peer_id=r.peer_id, date=r.date,
                                                reaction=r.reaction,
                                                my=r.peer_id == types.PeerUser(member) or None)
                      for r in kept]
            reactions = types.MessageReactions(
                results=[types.ReactionCount(types.ReactionEmoji(e), n)
                         for e, n in counts.items()], recent_reactions=recent)
            if message is not None:
                message.reactions = types.MessageReactions(
                    results=reactions.results, recent_reactions=list(kept))
            peer = self._peer_for(target, member, user)
            last = types.UpdateMessageReactions(peer=peer, msg_id=own_id, reactions=reactions)
            await self._push(member, last)
        return last

    async def typing_as(self: FakeTelegram, person: Person, other: Person) -> None:
        await self._push(other.id, types.UpdateUserTyping(person.id,
                                                          types.SendMessageTypingAction()))

    async def read_as(self: FakeTelegram, reader: Person, other: Person, msg_id: int) -> None:
        """`reader` read the private chat up to their message `msg_id`: `other` learns it
        (their own id of that message)."""
        own = self.copy_id(reader.id, msg_id, other.id)
        person = self.people[other.id]
        update = self._box_add(person, lambda pts: types.UpdateReadHistoryOutbox(
            peer=types.PeerUser(reader.id), max_id=own, pts=pts, pts_count=1))
        await self._push(other.id, update)

    # ---- what the bridge's Telethon calls ---------------------------------------------------

    async def rpc_messages_GetDialogs(self: FakeTelegram, connection: Connection,
                                      request: Any, user: int) -> Any:
        dialogs, messages = [], []
        me = self.people[user]
        partners = {m.peer_id.user_id: m for m in me.messages.values()
                    if isinstance(m.peer_id, types.PeerUser)}
        for partner, message in partners.items():
            dialogs.append(self._dialog(types.PeerUser(partner), message.id))
            messages.append(message)
        for group in self.groups.values():
            if user in group.members:
                dialogs.append(self._dialog(group.peer(), 0, group.pts if group.channel
                                            else None))
        users, chats = self._entities_of(me, user)
        return types.messages.Dialogs(dialogs=dialogs, messages=messages, chats=chats,
                                      users=users)

    @staticmethod
    def _dialog(peer: Any, top: int, pts: int | None = None) -> types.Dialog:
        return types.Dialog(peer=peer, top_message=top, read_inbox_max_id=0,
                            read_outbox_max_id=0, unread_count=0, unread_mentions_count=0,
                            unread_reactions_count=0, unread_poll_votes_count=0,
                            notify_settings=types.PeerNotifySettings(), pts=pts)

    async def rpc_contacts_ResolveUsername(self: FakeTelegram, connection: Connection,
                                           request: Any, user: int) -> Any:
        me = self.people[user]
        users, chats = self._entities_of(me, user)
        for group in self.groups.values():
            if group.username and group.username.lower() == request.username.lower():
                return types.contacts.ResolvedPeer(group.peer(), [group.tl(user)], users)
        for person in self.people.values():
            if person.username and person.username.lower() == request.username.lower():
                return types.contacts.ResolvedPeer(types.PeerUser(person.id), chats, users)
        raise RpcError(400, "USERNAME_NOT_OCCUPIED")

    async def rpc_channels_GetChannels(self: FakeTelegram, connection: Connection,
                                       request: Any, user: int) -> Any:
        return types.messages.Chats([self.groups[c.channel_id].tl(user) for c in request.id
                                     if getattr(c, "channel_id", None) in self.groups])

    async def rpc_messages_GetChats(self: FakeTelegram, connection: Connection,
                                    request: Any, user: int) -> Any:
        return types.messages.Chats([self.groups[c].tl(user) for c in request.id
                                     if c in self.groups])

    def _check_post(self, target: Target, user: int) -> None:
        if isinstance(target, Group) and not target.may_post(user):
            raise RpcError(403, "CHAT_WRITE_FORBIDDEN")

    async def _answer(self: FakeTelegram, user: int, updates: list[Any]) -> types.Updates:
        users, chats = self._entities_of(self.people[user], user)
        return types.Updates(updates=updates, users=users, chats=chats, date=now(), seq=0)

    @staticmethod
    def _stored_entities(entities: list[Any] | None) -> list[Any] | None:
        """As Telegram does: a mention sent with an input user is stored by user id."""
        if not entities:
            return entities
        return [types.MessageEntityMentionName(e.offset, e.length, e.user_id.user_id)
                if isinstance(e, types.InputMessageEntityMentionName) else e
                for e in entities]

    async def rpc_messages_SendMessage(self: FakeTelegram, connection: Connection,
                                       request: Any, user: int) -> Any:
        target = self._target(request.peer, user)
        self._check_post(target, user)
        _, updates = await self._deliver(user, target, request.message,
                                         self._stored_entities(request.entities),
                                         request.reply_to, None, connection,
                                         request.random_id)
        return await self._answer(user, updates)

    async def rpc_messages_SendMedia(self: FakeTelegram, connection: Connection,
                                     request: Any, user: int) -> Any:
        target = self._target(request.peer, user)
        self._check_post(target, user)
        media = self._store_media(request.media)
        _, updates = await self._deliver(user, target, request.message, request.entities,
                                         request.reply_to, media, connection,
                                         request.random_id)
        return await self._answer(user, updates)

    async def rpc_messages_EditMessage(self: FakeTelegram, connection: Connection,
                                       request: Any, user: int) -> Any:
        target = self._target(request.peer, user)
        updates = await self._edit(user, target, request.id, request.message or "",
                                   self._stored_entities(request.entities), connection)
        return await self._answer(user, updates)

    async def rpc_messages_DeleteMessages(self: FakeTelegram, connection: Connection,
                                          request: Any, user: int) -> Any:
        return await self._delete(user, None, list(request.id), connection)

    async def rpc_channels_DeleteMessages(self: FakeTelegram, connection: Connection,
                                          request: Any, user: int) -> Any:
        return await self._delete(user, self._target(request.channel, user), list(request.id))

    async def rpc_messages_SendReaction(self: FakeTelegram, connection: Connection,
                                        request: Any, user: int) -> Any:
        target = self._target(request.peer, user)
        emoji = next((r.emoticon for r in request.reaction or []
                      if isinstance(r, types.ReactionEmoji)), None)
        update = await self._react(user, target, request.msg_id, emoji)
        return await self._answer(user, [update] if update else [])

    async def rpc_messages_SetTyping(self: FakeTelegram, connection: Connection,
                                     request: Any, user: int) -> Any:
        target = self._target(request.peer, user)
        if isinstance(target, Person):
            await self._push(target.id, types.UpdateUserTyping(user, request.action))
        return BOOL_TRUE

    async def rpc_messages_ReadHistory(self: FakeTelegram, connection: Connection,
                                       request: Any, user: int) -> Any:
        target = self._target(request.peer, user)
        self.reads.append((user, target, request.max_id))  # type: ignore[attr-defined]
        me = self.people[user]
        update = self._box_add(me, lambda pts: types.UpdateReadHistoryInbox(
            peer=self._peer_for(target, user, user), max_id=request.max_id,
            still_unread_count=0, pts=pts, pts_count=1))
        await self._push(user, update, skip=connection)
        return types.messages.AffectedMessages(update.pts, 1)

    async def rpc_channels_ReadHistory(self: FakeTelegram, connection: Connection,
                                       request: Any, user: int) -> Any:
        target = self._target(request.channel, user)
        self.reads.append((user, target, request.max_id))  # type: ignore[attr-defined]
        return BOOL_TRUE

    async def rpc_messages_GetForumTopics(self: FakeTelegram, connection: Connection,
                                          request: Any, user: int) -> Any:
        group = self._target(request.peer, user)
        assert isinstance(group, Group)
        topics = [types.ForumTopic(
            id=top, date=now(), peer=group.peer(), title=title, icon_color=0,
            top_message=top, read_inbox_max_id=0, read_outbox_max_id=0, unread_count=0,
            unread_mentions_count=0, unread_reactions_count=0, unread_poll_votes_count=0,
            from_id=types.PeerUser(user), notify_settings=types.PeerNotifySettings())
            for top, title in group.topics.items()]
        users, chats = self._entities_of(self.people[user], user)
        return types.messages.ForumTopics(count=len(topics), topics=topics, messages=[],
                                          chats=chats, users=users, pts=group.pts)

    async def create_topic(self: FakeTelegram, creator: Person, group: Group, title: str
                           ) -> int:
        """A new forum topic: its service message's id is the topic's id."""
        msg_id = group.next_message_id
        group.next_message_id += 1
        message = types.MessageService(id=msg_id, peer_id=group.peer(), date=now(),
                                       action=types.MessageActionTopicCreate(title, 0),
                                       from_id=types.PeerUser(creator.id))
        group.messages[msg_id] = message
        group.topics[msg_id] = title
        update = self._channel_add(group, lambda pts: types.UpdateNewChannelMessage(
            message, pts, 1))
        for member in group.members:
            await self._push(member, update)
        return msg_id

    # ---- catching up -------------------------------------------------------------------------

    def _box_of(self: FakeTelegram, target: Target, user: int) -> dict[int, Any]:
        """The messages of a chat as `user` sees them (their own copies in private chats
        and basic groups)."""
        if isinstance(target, Group) and target.channel:
            return target.messages
        me = self.people[user]
        wanted = types.PeerUser(target.id) if isinstance(target, Person) else target.peer()
        return {i: m for i, m in me.messages.items() if m.peer_id == wanted}

    async def rpc_messages_GetHistory(self: FakeTelegram, connection: Connection,
                                      request: Any, user: int) -> Any:
        """messages.getHistory as Telegram pages it: the chat's messages newest first; the
        page starts at the first one older than `offset_id` (else older than
        `offset_date`), moved by `add_offset` (negative: towards newer ones), `limit` long
        (100 at most), within `min_id` < id < `max_id`. A slice (or a channel's messages)
        says how many there are in all, so the client knows to ask again."""
        target = self._target(request.peer, user)
        box = self._box_of(target, user)
        newest_first = sorted(box, reverse=True)
        if request.offset_id:
            start = sum(1 for i in newest_first if i >= request.offset_id)
        elif request.offset_date and request.offset_date.timestamp() > 0:
            start = sum(1 for i in newest_first if box[i].date >= request.offset_date)
        else:
            start = 0
        begin = max(start + request.add_offset, 0)
        end = max(start + request.add_offset + min(request.limit, 100), 0)
        ids = [i for i in newest_first[begin:end]
               if (not request.max_id or i < request.max_id) and i > request.min_id]
        users, chats = self._entities_of(self.people[user], user)
        messages = [box[i] for i in ids]
        if isinstance(target, Group) and target.channel:
            return types.messages.ChannelMessages(pts=target.pts, count=len(box),
                                                  messages=messages, topics=[],
                                                  chats=chats, users=users)
        if len(messages) < len(box):
            return types.messages.MessagesSlice(count=len(box), messages=messages,
                                                topics=[], chats=chats, users=users)
        return types.messages.Messages(messages=messages, topics=[], chats=chats,
                                       users=users)

    async def rpc_messages_GetMessages(self: FakeTelegram, connection: Connection,
                                       request: Any, user: int) -> Any:
        """Messages of private chats and basic groups by id (the person's own ids)."""
        me = self.people[user]
        found = [me.messages.get(getattr(i, "id", 0)) for i in request.id]
        users, chats = self._entities_of(me, user)
        return types.messages.Messages(
            messages=[m or types.MessageEmpty(id=getattr(i, "id", 0))
                      for m, i in zip(found, request.id, strict=True)],
            topics=[], chats=chats, users=users)

    async def rpc_channels_GetMessages(self: FakeTelegram, connection: Connection,
                                       request: Any, user: int) -> Any:
        group = self._target(request.channel, user)
        assert isinstance(group, Group)
        users, chats = self._entities_of(self.people[user], user)
        ids = [getattr(i, "id", 0) for i in request.id]
        return types.messages.ChannelMessages(
            pts=group.pts, count=len(ids), topics=[], chats=chats, users=users,
            messages=[group.messages.get(i) or types.MessageEmpty(id=i) for i in ids])

    async def rpc_updates_GetDifference(self: FakeTelegram, connection: Connection,
                                        request: Any, user: int) -> Any:
        me = self.people[user]
        state = types.updates.State(pts=me.pts, qts=0, date=now(), seq=0, unread_count=0)
        missed = [u for pts, u in me.box if pts > request.pts]
        if not missed:
            return types.updates.DifferenceEmpty(date=now(), seq=0)
        new = [u.message for u in missed if isinstance(u, types.UpdateNewMessage)]
        other = [u for u in missed if not isinstance(u, types.UpdateNewMessage)]
        users, chats = self._entities_of(me, user)
        return types.updates.Difference(new_messages=new, new_encrypted_messages=[],
                                        other_updates=other, chats=chats, users=users,
                                        state=state)

    async def rpc_updates_GetChannelDifference(self: FakeTelegram, connection: Connection,
                                               request: Any, user: int) -> Any:
        group = self._target(request.channel, user)
        assert isinstance(group, Group)
        missed = [u for pts, u in group.box if pts > request.pts]
        if not missed:
            return types.updates.ChannelDifferenceEmpty(pts=group.pts, final=True)
        new = [u.message for u in missed if isinstance(u, types.UpdateNewChannelMessage)]
        other = [u for u in missed if not isinstance(u, types.UpdateNewChannelMessage)]
        users, chats = self._entities_of(self.people[user], user)
        return types.updates.ChannelDifference(pts=group.pts, new_messages=new,
                                               other_updates=other, chats=chats,
                                               users=users, final=True)

    # ---- files -------------------------------------------------------------------------------

    async def rpc_upload_SaveFilePart(self: FakeTelegram, connection: Connection,
                                      request: Any, user: int) -> Any:
        self.uploads[request.file_id][request.file_part] = request.bytes
        return BOOL_TRUE

    async def rpc_upload_SaveBigFilePart(self: FakeTelegram, connection: Connection,
                                         request: Any, user: int) -> Any:
        self.uploads[request.file_id][request.file_part] = request.bytes
        return BOOL_TRUE

    def upload(self: FakeTelegram, data: bytes, mime_type: str, name: str) -> StoredFile:
        stored = StoredFile(new_id(), data, mime_type, name)
        self.files[stored.id] = stored
        return stored

    def _store_media(self: FakeTelegram, media: Any) -> Any:
        parts = self.uploads.pop(media.file.id, {})
        data = b"".join(parts[i] for i in sorted(parts))
        if getattr(media.file, "md5_checksum", "") and (
                hashlib.md5(data).hexdigest() != media.file.md5_checksum):
            raise RpcError(400, "MD5_CHECKSUM_INVALID")
        if isinstance(media, types.InputMediaUploadedPhoto):
            return self.photo_media(self.upload(data, "image/jpeg", media.file.name))
        return self.document_media(self.upload(data, media.mime_type, media.file.name),
                                   media.attributes)

    def photo_media(self: FakeTelegram, stored: StoredFile) -> types.MessageMediaPhoto:
        return types.MessageMediaPhoto(photo=types.Photo(
            id=stored.id, access_hash=stored.access_hash, file_reference=b"", date=now(),
            sizes=[types.PhotoSize("y", 64, 64, len(stored.data))], dc_id=self.dc_id))

    def document_media(self: FakeTelegram, stored: StoredFile, attributes: list[Any] = ()
                       ) -> types.MessageMediaDocument:
        attributes = list(attributes) or [types.DocumentAttributeFilename(stored.name)]
        if not any(isinstance(a, types.DocumentAttributeFilename) for a in attributes):
            attributes.append(types.DocumentAttributeFilename(stored.name))
        return types.MessageMediaDocument(document=types.Document(
            id=stored.id, access_hash=stored.access_hash, file_reference=b"", date=now(),
            mime_type=stored.mime_type, size=len(stored.data), dc_id=self.dc_id,
            attributes=attributes))

    async def rpc_upload_GetFile(self: FakeTelegram, connection: Connection, request: Any,
                                 user: int) -> Any:
        location = request.location
        stored = self.files.get(getattr(location, "id", None)
                                or getattr(location, "photo_id", 0))
        if stored is None:
            raise RpcError(400, "FILE_ID_INVALID")
        return types.upload.File(type=types.storage.FileUnknown(), mtime=0,
                                 bytes=stored.data[request.offset:request.offset
                                                   + request.limit])
