"""Slack events (from Socket Mode or the Events API) as the bridge's neutral remote events."""

from __future__ import annotations

import logging
import re
from typing import Any, Protocol

from ...core.media import FetchedMedia, MediaRefused
from ..base import (
    Attachment,
    BridgeSink,
    RemoteEdit,
    RemoteEvent,
    RemoteInvite,
    RemoteMessage,
    RemoteProfile,
    RemoteReaction,
    RemoteRedaction,
    RemoteRoom,
    RemoteUser,
)
from ..lanes import Lanes
from ..seen import SeenIds
from .emoji import shortcode_to_unicode
from .formatting import mrkdwn_to_matrix
from .session import SlackSession

log = logging.getLogger("relayforge.slack.events")
_MENTION = re.compile(r"<@([UW][A-Z0-9]+)(?:\|[^>]*)?>")
# Plain messages and the kinds that are messages too; joins, topic changes etc. are not.
MESSAGE_SUBTYPES = (None, "thread_broadcast", "file_share", "me_message")


class SlackLink(Protocol):
    """All the event translation needs of the connector (which is one): Slack calls as a
    linked person, the people linked, what the bridge sent itself, and the core's door."""

    sink: BridgeSink | None

    def session_of_user(self, team: str, user: str) -> SlackSession | None: ...

    def session_in(self, team: str) -> SlackSession | None: ...

    async def call(self, session: SlackSession, method: str, **params: Any) -> Any: ...

    async def download(self, session: SlackSession, url: str) -> FetchedMedia: ...

    async def settled(self, channel: str) -> None: ...

    def sent_by_bridge(self, channel: str, *ids: str) -> bool: ...

    async def emit(self, event: RemoteEvent) -> None: ...


class SlackEvents:
    def __init__(self, slack: SlackLink) -> None:
        self.slack = slack
        self._users: dict[tuple[str, str], RemoteUser] = {}
        self._rooms: dict[tuple[str, str], RemoteRoom] = {}
        # Event ids handled already: Slack delivers an event again until it is acknowledged.
        self._seen = SeenIds(5000)
        # Socket Mode hands each event over as a task of its own: a channel's events wait
        # for the ones before them, so they reach Matrix in the order Slack sent them.
        self._lanes = Lanes()

    async def _emit(self, event: RemoteEvent) -> None:
        await self.slack.emit(event)

    def _receiver(self, team: str, payload: dict[str, Any]) -> SlackSession | None:
        """The linked person this event was delivered for (Slack names them in
        `authorizations`), else anyone linked in that workspace."""
        for authorization in payload.get("authorizations") or []:
            session = self.slack.session_of_user(team, authorization.get("user_id", ""))
            if session is not None:
                return session
        return self.slack.session_in(team)

    async def handle(self, payload: dict[str, Any]) -> None:
        event = payload.get("event") or {}
        team = payload.get("team_id") or event.get("team") or ""
        channel = event.get("channel") or (event.get("item") or {}).get("channel")
        async with self._lanes.lane((team, channel)):
            await self._handle(payload, event, team)

    async def _handle(self, payload: dict[str, Any], event: dict[str, Any], team: str) -> None:
        event_id = payload.get("event_id") or ""
        if event_id and event_id in self._seen:
            return  # delivered again (a retry): already handled
        session = self._receiver(team, payload)
        if session is None:
            log.debug("Slack event %s for %s: nobody linked there", event_id, team)
            return
        kind = event.get("type")
        if kind == "message":
            await self._message(session, team, event)
        elif kind in ("reaction_added", "reaction_removed"):
            await self._reaction(session, team, event)
        elif kind == "user_change":
            await self._user_change(session, team, event.get("user") or {})
        elif kind == "member_joined_channel" and event.get("user") == session.user:
            await self._emit(RemoteInvite(room=await self.room(session, event["channel"]),
                                          sender=await self.user(session, team,
                                                                 event.get("inviter")
                                                                 or event["user"]),
                                          receiver=session.owner,
                                          persona_id=session.persona_id))
        if event_id:
            self._seen.add(event_id)

    # ---- people and rooms -------------------------------------------------------------------

    async def user(self, session: SlackSession, team: str, user_id: str) -> RemoteUser:
        known = self._users.get((team, user_id))
        if known is not None:
            return known
        info = await self.slack.call(session, "users.info", user=user_id)
        return await self._remember_user(session, team, info["user"])

    async def _remember_user(self, session: SlackSession, team: str, user: dict[str, Any]
                             ) -> RemoteUser:
        profile = user.get("profile") or {}
        name = (profile.get("display_name") or profile.get("real_name") or user.get("name")
                or user["id"])
        avatar = None
        picture = profile.get("image_192") or profile.get("image_72")
        if picture:
            try:
                fetched = await self.slack.download(session, picture)
                avatar = Attachment("avatar.png", fetched.mimetype, fetched.data)
            except MediaRefused as e:
                log.info("No avatar for Slack user %s: %s", user["id"], e)
        remote = RemoteUser(f"{team}/{user['id']}", display_name=name, avatar=avatar)
        self._users[(team, user["id"])] = remote
        return remote

    async def _user_change(self, session: SlackSession, team: str, user: dict[str, Any]
                           ) -> None:
        if not user.get("id"):
            return
        remote = await self._remember_user(session, team, user)
        await self._emit(RemoteProfile(room=RemoteRoom(f"{team}/"), sender=remote,
                                       persona_id=session.persona_id))

    async def room(self, session: SlackSession, channel: str) -> RemoteRoom:
        key = (session.team, channel)
        known = self._rooms.get(key)
        if known is not None:
            return known
        info = (await self.slack.call(session, "conversations.info", channel=channel))["channel"]
        if info.get("is_im"):
            other = await self.user(session, session.team, info.get("user", ""))
            name = other.display_name
        elif info.get("is_mpim"):
            name = info.get("purpose", {}).get("value") or info.get("name")
        else:
            name = f"#{info.get('name', channel)}"
        topic = (info.get("topic") or {}).get("value") or None
        room = RemoteRoom(f"{session.team}/{channel}", name=name, topic=topic,
                          direct=bool(info.get("is_im") or info.get("is_mpim")))
        self._rooms[key] = room
        return room

    # ---- messages ---------------------------------------------------------------------------

    async def _format(self, session: SlackSession, team: str, text: str) -> Any:
        assert self.slack.sink is not None
        sink = self.slack.sink
        for user_id in set(_MENTION.findall(text)):
            await self.user(session, team, user_id)

        def resolve_user(user_id: str) -> tuple[str, str] | None:
            known = self._users.get((team, user_id))
            if known is None:
                return None
            return sink.ghost_mxid(known.remote_id), known.display_name or user_id

        return mrkdwn_to_matrix(text, resolve_user, lambda channel: None)

    async def _is_echo(self, session: SlackSession, team: str, user: str | None,
                       channel: str, *ids: str) -> bool:
        """Did the bridge itself do this (as one of its linked people)? Sends into the
        channel still in flight are waited for, since Slack may announce them first."""
        if user is None or self.slack.session_of_user(team, user) is None:
            return False
        await self.slack.settled(channel)
        return self.slack.sent_by_bridge(channel, *ids)

    def bridged(self, session: SlackSession, channel: str, channel_type: str | None) -> bool:
        """Only channels a rule maps come into Matrix; direct and group messages always do."""
        if channel_type in ("im", "mpim") or channel[:1] == "D":
            session.mapped.add(channel)  # so reactions there (no channel type) follow
        return channel in session.mapped

    async def _message(self, session: SlackSession, team: str, event: dict[str, Any]) -> None:
        channel = event.get("channel", "")
        subtype = event.get("subtype")
        if not self.bridged(session, channel, event.get("channel_type")):
            return
        if subtype == "message_changed":
            await self._edited(session, team, channel, event)
        elif subtype == "message_deleted":
            ts = event.get("deleted_ts", "")
            previous = event.get("previous_message") or {}
            if await self._is_echo(session, team, previous.get("user"), channel,
                                   f"delete:{ts}"):
                return
            await self._emit(RemoteRedaction(
                room=await self.room(session, channel),
                sender=await self.user(session, team, previous.get("user") or session.user),
                receiver=session.owner, persona_id=session.persona_id, target_id=ts))
        elif subtype in MESSAGE_SUBTYPES and event.get("user"):
            await self.new_message(session, team, channel, event)

    async def _edited(self, session: SlackSession, team: str, channel: str,
                      event: dict[str, Any]) -> None:
        message = event.get("message") or {}
        text = message.get("text", "")
        if text == (event.get("previous_message") or {}).get("text"):
            return  # an unfurl or a file change, not an edit of the words
        if await self._is_echo(session, team, message.get("user"), channel,
                               f"edit:{message.get('ts')}:{text}"):
            return
        formatted = await self._format(session, team, text)
        await self._emit(RemoteEdit(
            room=await self.room(session, channel),
            sender=await self.user(session, team, message.get("user") or session.user),
            receiver=session.owner, persona_id=session.persona_id,
            target_id=message.get("ts", ""), text=formatted.body, html=formatted.html))

    async def new_message(self, session: SlackSession, team: str, channel: str,
                          event: dict[str, Any]) -> None:
        files = event.get("files") or []
        if await self._is_echo(session, team, event["user"], channel, event["ts"],
                               *(f.get("id", "") for f in files)):
            return
        for remote in await self.message_events(session, team, channel, event):
            await self._emit(remote)

    async def message_events(self, session: SlackSession, team: str, channel: str,
                             event: dict[str, Any]) -> list[RemoteEvent]:
        """A Slack message as the neutral events it is (its text, then each file), for the
        live path and for history alike."""
        ts, user = event["ts"], event["user"]
        files = event.get("files") or []
        out: list[RemoteEvent] = []
        room = await self.room(session, channel)
        sender = await self.user(session, team, user)
        thread = event.get("thread_ts")
        common: dict[str, Any] = {
            "room": room, "sender": sender, "receiver": session.owner,
            "persona_id": session.persona_id, "timestamp_ms": int(float(ts) * 1000),
            "thread_root": thread if thread and thread != ts else None}
        text = event.get("text") or ""
        if text:
            formatted = await self._format(session, team, text)
            out.append(RemoteMessage(
                **common, message_id=ts, text=formatted.body, html=formatted.html,
                mentions=tuple(formatted.mentioned_user_ids),
                mentions_room=formatted.mentions_room))
        for file in files:
            url = file.get("url_private_download") or file.get("url_private")
            if not url:
                continue
            name = file.get("name") or "file"
            message_id = ts if not text and file is files[0] else f"{ts}/{file.get('id')}"
            try:
                fetched = await self.slack.download(session, url)
            except MediaRefused as e:
                # The file's name still arrives, and the room is told why the file did not.
                log.warning("Slack file %s in %s not bridged: %s", file.get("id"), channel, e)
                out.append(RemoteMessage(**common, message_id=message_id, text=name,
                                         file_refused=e.notice(name)))
                continue
            out.append(RemoteMessage(
                **common, message_id=message_id, text=name,
                attachment=Attachment(name, file.get("mimetype") or fetched.mimetype,
                                      fetched.data)))
        return out

    async def _reaction(self, session: SlackSession, team: str, event: dict[str, Any]) -> None:
        item = event.get("item") or {}
        if item.get("type") != "message" or not self.bridged(session, item.get("channel", ""),
                                                              None):
            return
        channel, ts, user = item.get("channel", ""), item.get("ts", ""), event.get("user", "")
        name = event.get("reaction", "")
        reaction_id = f"{ts}:{user}:{name}"
        room = await self.room(session, channel)
        sender = await self.user(session, team, user)
        if event["type"] == "reaction_added":
            if await self._is_echo(session, team, user, channel, reaction_id):
                return
            await self._emit(RemoteReaction(
                room=room, sender=sender, receiver=session.owner,
                persona_id=session.persona_id, reaction_id=reaction_id, target_id=ts,
                key=shortcode_to_unicode(name) or f":{name}:"))
        elif not await self._is_echo(session, team, user, channel, f"unreact:{reaction_id}"):
            await self._emit(RemoteRedaction(room=room, sender=sender, receiver=session.owner,
                                             persona_id=session.persona_id,
                                             target_id=reaction_id))
