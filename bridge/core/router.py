"""Routing between Matrix portals and connectors, with the message map translating ids.

Remote -> Matrix: the event arrives from a connector; the ghost and portal are made on demand;
the Matrix event id is recorded against the remote id. Matrix -> remote: an event in a portal
becomes a neutral `Matrix*` event whose targets are already remote ids.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from mautrix.appservice import IntentAPI
from mautrix.errors import MatrixRequestError
from mautrix.types import (
    EventID,
    MediaMessageEventContent,
    MessageEvent,
    MessageType,
    ReactionEvent,
    RedactionEvent,
    RoomID,
    TextMessageEventContent,
    UserID,
)

from ..compliance.archive import Captured, CaptureKind, Tap
from ..db import MessageKind, MessageRow, Portal, Storage
from ..db.first_send import HeldSend
from ..metrics import Metrics
from ..networks.base import (
    Attachment,
    Connector,
    MatrixEdit,
    MatrixEvent,
    MatrixMessage,
    MatrixReaction,
    MatrixRead,
    MatrixRedaction,
    MatrixTyping,
    RemoteEdit,
    RemoteEvent,
    RemoteInvite,
    RemoteMessage,
    RemoteProfile,
    RemoteReaction,
    RemoteRead,
    RemoteRedaction,
    RemoteRoom,
    RemoteTyping,
    RemoteUser,
    SendRefused,
)
from ..security.impersonation import Action, ImpersonationRefused
from .authority import AgentActor, Authority, NotAllowedHere
from .avatars import public_avatar
from .backfill_gate import PortalGate
from .echoes import Expected
from .inflight import SendsInFlight
from .matrix_content import is_thread_fallback, media_content, text_content, txn_id
from .matrix_side import GhostDirectory, OwnMatrixUser, OwnMatrixUsers, PortalDirectory
from .send_kind import SendKind, send_kind

log = logging.getLogger("relayforge.router")

_TEXT_TYPES = (MessageType.TEXT, MessageType.NOTICE, MessageType.EMOTE)
T = TypeVar("T")


class ConnectorSink:
    """The door one connector reports through; it knows which network is talking."""

    def __init__(self, router: Router, network: str) -> None:
        self.router = router
        self.network = network

    async def handle_remote_event(self, event: RemoteEvent) -> None:
        # While the room's history comes in (core/backfill.py), live events wait after it.
        await self.router.gate.live(self.network, event, self.router.handle_remote_event)

    async def history_gap(self, persona_id: str, remote_room_ids: list[str] | None = None
                          ) -> None:
        if self.router.on_history_gap is not None:
            await self.router.on_history_gap(self.network, persona_id, remote_room_ids)

    def ghost_mxid(self, remote_user_id: str) -> str:
        return self.router.ghosts.ghost_mxid(self.network, remote_user_id)

    async def remote_user_for(self, mxid: str) -> str | None:
        ghost = self.router.ghosts.ghost_remote_id(self.network, mxid)
        if ghost is not None:
            return ghost
        return await self.router.storage.personas.external_id_of_matrix_user(mxid, self.network)

    async def load_sync_state(self, persona_id: str) -> dict[str, Any] | None:
        return await self.router.storage.sync_states.get(persona_id)

    async def save_sync_state(self, persona_id: str, state: dict[str, Any]) -> None:
        await self.router.storage.sync_states.put(persona_id, state)


class Router:
    def __init__(self, storage: Storage, portals: PortalDirectory, ghosts: GhostDirectory,
                 connectors: dict[str, Connector], metrics: Metrics,
                 authority: Authority | None = None, public_media: str | None = None
                 ) -> None:
        self.storage = storage
        self.portals = portals
        self.ghosts = ghosts
        self.connectors = connectors
        self.metrics = metrics
        # Who may act as whom (networks that puppet); None only for bridges without people.
        self.authority = authority
        # Where other networks may fetch Matrix media (relayed senders' pictures), if anywhere.
        self.public_media = public_media
        # Set by the mapping rules (built after the router, which they need): what to do when
        # someone is invited to a remote room.
        self.on_invite: Callable[[str, RemoteInvite], Awaitable[None]] | None = None
        self.in_flight = SendsInFlight()
        self.gate = PortalGate()
        # Set by the backfill: a connector may have missed events (core/backfill.py).
        self.on_history_gap: Callable[[str, str, list[str] | None], Awaitable[None]] | None = None
        # Set when double puppeting is on: a person's own Matrix user speaks for them.
        self.own_users: OwnMatrixUsers | None = None
        # Typing and read markers the bridge set as a person's own Matrix user, whose echo
        # must not go back out to the network (a loop with networks that echo them).
        self._own_signals = Expected()
        # Legal holds keep what they cover from here (both directions; set by the app).
        self.archive = Tap()

    def sink_for(self, network: str) -> ConnectorSink:
        return ConnectorSink(self, network)

    # ---- remote -> Matrix ------------------------------------------------------------------

    async def handle_remote_event(self, network: str, event: RemoteEvent) -> None:
        kind = type(event).__name__
        self.metrics.remote_events.labels(network=network, type=kind).inc()
        with self.metrics.send_seconds.labels(network=network, direction="to_matrix").time():
            if isinstance(event, RemoteMessage):
                await self._remote_message(network, event)
            elif isinstance(event, RemoteEdit):
                await self._remote_edit(network, event)
            elif isinstance(event, RemoteRedaction):
                await self._remote_redaction(network, event)
            elif isinstance(event, RemoteReaction):
                await self._remote_reaction(network, event)
            elif isinstance(event, RemoteTyping | RemoteRead):
                await self._remote_signal(network, event)
            elif isinstance(event, RemoteInvite):
                if self.on_invite is not None:
                    await self.on_invite(network, event)
            elif isinstance(event, RemoteProfile):
                await self.ghosts.ensure(network, event.sender)
            else:
                raise TypeError(f"unknown remote event type {kind}")
        self.metrics.sends.labels(network=network, direction="to_matrix", type=kind).inc()

    async def _target(self, network: str, room: RemoteRoom, remote_id: str) -> MessageRow | None:
        row = await self.storage.messages.get_by_remote(network, room.remote_id, remote_id)
        if row is None and self.in_flight.busy((network, room.remote_id)):
            # Possibly an answer to what the bridge is sending right now: wait for its id.
            await self.in_flight.settled((network, room.remote_id))
            row = await self.storage.messages.get_by_remote(network, room.remote_id, remote_id)
        if row is None:
            log.debug("No Matrix event for %s message %s in %s", network, remote_id,
                      room.remote_id)
        return row

    async def _remote_message(self, network: str, event: RemoteMessage) -> None:
        messages = self.storage.messages
        if await messages.get_by_remote(network, event.room.remote_id, event.message_id):
            return  # delivered twice by the network: already in Matrix
        # A direct chat is the conversation of the persona whose session saw it.
        portal = await self.portals.ensure(
            network, event.room, _user(event.receiver),
            persona_id=event.persona_id if event.room.direct else None)
        if event.room.direct and await messages.get_by_remote(network, event.room.remote_id,
                                                              event.message_id):
            # The direct chat's history, brought in as its portal was made, had it.
            return
        own = await self._own_user(network, event.sender, portal.mxid)
        intent = own.intent if own else await self.ghosts.ensure(network, event.sender)
        content = (await media_content(intent, event.attachment) if event.attachment
                   else text_content(event.text, event.html))
        if event.thread_root:
            root = await self._target(network, event.room, event.thread_root)
            if root:
                content.set_thread_parent(root.mxid)
        if event.reply_to:
            target = await self._target(network, event.room, event.reply_to)
            if target:
                content.set_reply(target.mxid)
        if event.mentions or event.mentions_room:
            content["m.mentions"] = {"user_ids": list(event.mentions),
                                     **({"room": True} if event.mentions_room else {})}
        event_id, intent = await self._send_as(
            network, event.sender, own, intent, "send", portal.mxid,
            lambda i: i.send_message(portal.mxid, content, timestamp=event.timestamp_ms,
                                     txn_id=txn_id(network, event.room, event.message_id)))
        await self._remember(network, event.room, event.message_id, MessageKind.MESSAGE,
                             event_id, portal, intent.mxid, event.room_ref)
        await self.archive.capture(Captured.of_remote(network, event, portal.mxid, event_id,
                                                      intent.mxid))
        if event.file_refused:
            # Said by the bridge, not the sender's ghost: the sender never wrote it.
            await self.portals.bot_intent.send_message(
                portal.mxid, TextMessageEventContent(msgtype=MessageType.NOTICE,
                                                     body=event.file_refused),
                txn_id=txn_id(network, event.room, f"{event.message_id}\0file refused"))

    async def _remote_edit(self, network: str, event: RemoteEdit) -> None:
        target = await self._target(network, event.room, event.target_id)
        if target is None:
            return
        own = await self._own_user(network, event.sender, target.room_mxid)
        if not self._remote_author(network, event, target, "correction", own):
            return
        intent = own.intent if own else await self.ghosts.ensure(network, event.sender)
        content = text_content(event.text, event.html)
        content.set_edit(target.mxid)
        edit_id, intent = await self._send_as(
            network, event.sender, own, intent, "edit", target.room_mxid,
            lambda i: i.send_message(target.room_mxid, content, timestamp=event.timestamp_ms))
        await self.archive.capture(Captured.of_remote(network, event, target.room_mxid, edit_id,
                                                      intent.mxid, target_event_id=target.mxid))

    async def _remote_redaction(self, network: str, event: RemoteRedaction) -> None:
        target = await self._target(network, event.room, event.target_id)
        if target is None:
            return
        own = await self._own_user(network, event.sender, target.room_mxid)
        if not self._remote_author(network, event, target, "deletion", own):
            return
        intent = own.intent if own else await self.ghosts.ensure(network, event.sender)
        redaction_id, intent = await self._send_as(
            network, event.sender, own, intent, "delete", target.room_mxid,
            lambda i: i.redact(target.room_mxid, target.mxid, timestamp=event.timestamp_ms))
        await self.archive.capture(Captured.of_remote(
            network, event, target.room_mxid, redaction_id, intent.mxid,
            target_event_id=target.mxid))
        await self.storage.messages.delete(target.mxid)

    def _remote_author(self, network: str, event: RemoteEdit | RemoteRedaction,
                       target: MessageRow, what: str, own: OwnMatrixUser | None) -> bool:
        """Only the author may change a message (XEP-0308/0424, Matrix's edit rules): the
        Matrix copy was sent by the ghost of its remote author (or by their own Matrix user,
        double puppeted), so a correction or deletion from anyone else, or of a message a
        Matrix user wrote in Matrix, is ignored."""
        author = self.ghosts.ghost_mxid(network, event.sender.remote_id)
        # Their own Matrix user is the same person: what it wrote in Matrix is theirs too.
        sent_as_them = own is not None and target.sender_mxid == own.intent.mxid
        if target.sender_mxid == author or sent_as_them:
            return True
        log.warning("Ignored a %s %s of %s in %s by %s: not its author", network, what,
                    event.target_id, event.room.remote_id, event.sender.remote_id)
        return False

    async def _remote_reaction(self, network: str, event: RemoteReaction) -> None:
        messages = self.storage.messages
        if await messages.get_by_remote(network, event.room.remote_id, event.reaction_id):
            return
        target = await self._target(network, event.room, event.target_id)
        if target is None:
            return
        own = await self._own_user(network, event.sender, target.room_mxid)
        intent = own.intent if own else await self.ghosts.ensure(network, event.sender)
        event_id, intent = await self._send_as(
            network, event.sender, own, intent, "react", target.room_mxid,
            lambda i: i.react(target.room_mxid, target.mxid, event.key,
                              timestamp=event.timestamp_ms,
                              txn_id=txn_id(network, event.room, event.reaction_id)))
        portal = await self.portals.get(network, event.room.remote_id)
        assert portal is not None  # the target message lives in it
        await self._remember(network, event.room, event.reaction_id, MessageKind.REACTION,
                             event_id, portal, intent.mxid)
        await self.archive.capture(Captured.of_remote(network, event, portal.mxid, event_id,
                                                      intent.mxid, target_event_id=target.mxid))

    async def _remote_signal(self, network: str, event: RemoteTyping | RemoteRead) -> None:
        portal = await self.portals.get(network, event.room.remote_id)
        if portal is None or portal.mxid is None:
            return  # no room in Matrix yet: nobody to show it to
        own = await self._own_user(network, event.sender, portal.mxid)
        intent = own.intent if own else await self.ghosts.ensure(network, event.sender)
        await intent.ensure_joined(portal.mxid)
        if isinstance(event, RemoteTyping):
            if own:  # its echo comes back as this user's typing: not to be sent out again
                self._own_signals.add((portal.mxid, intent.mxid, event.typing))
            await intent.set_typing(portal.mxid, timeout=30_000 if event.typing else 0)
            return
        target = await self._target(network, event.room, event.target_id)
        if target is not None:
            if own:
                self._own_signals.add((portal.mxid, intent.mxid, target.mxid))
            await intent.mark_read(portal.mxid, target.mxid)

    async def _own_user(self, network: str, sender: RemoteUser, room_id: RoomID | None
                        ) -> OwnMatrixUser | None:
        if self.own_users is None or room_id is None:
            return None
        return await self.own_users.acting_for(network, sender.remote_id, room_id)

    async def _send_as(self, network: str, sender: RemoteUser, own: OwnMatrixUser | None,
                       intent: IntentAPI, action: str, room_id: RoomID,
                       send: Callable[[IntentAPI], Awaitable[T]]) -> tuple[T, IntentAPI]:
        """Send as the person's own Matrix user when they have one in use, audited; if its
        token stopped working, as their ghost at once (nothing is lost)."""
        if own is None:
            return await send(intent), intent
        try:
            result = await send(intent)
        except MatrixRequestError as e:
            if not await own.refused(e):
                raise
            ghost = await self.ghosts.ensure(network, sender)
            return await send(ghost), ghost
        await own.acted(action, room_id, result if isinstance(result, str) else None)
        return result, intent

    async def handle_matrix_typing(self, portal: Portal, user: str, typing: bool) -> None:
        if self._own_signals.take((portal.mxid, user, typing)):
            return  # set by the bridge through the person's double puppet
        await self._signal(portal, user, Action.TYPING, lambda room, token: MatrixTyping(
            room=room, sender_mxid=user, event_id="", typing=typing, authorization=token))

    async def handle_matrix_read(self, portal: Portal, user: str, event_id: EventID) -> None:
        if self._own_signals.take((portal.mxid, user, event_id)):
            return  # set by the bridge through the person's double puppet
        target = await self.storage.messages.get_by_mxid(event_id)
        if target is None or target.sender_mxid == user:
            return
        await self._signal(portal, user, Action.READ, lambda room, token: MatrixRead(
            room=room, sender_mxid=user, event_id=event_id, target_id=target.remote_id,
            authorization=token))

    async def _signal(self, portal: Portal, user: str, action: Action,
                      make: Callable[[RemoteRoom, str | None], MatrixEvent]) -> None:
        """Typing and read receipts: best effort, never a notice (they are not messages)."""
        connector = self.connectors.get(portal.network)
        if connector is None:
            return
        try:
            token, _ = await self._acting(connector, user, portal, action)
        except NotAllowedHere:
            return
        await connector.deliver(make(RemoteRoom(portal.remote_id, portal.name), token))

    async def _remember(self, network: str, room: RemoteRoom, remote_id: str,
                        kind: MessageKind, event_id: EventID, portal: Portal,
                        sender: UserID, room_ref: str | None = None) -> None:
        await self.storage.messages.insert(MessageRow(
            network=network, remote_room=room.remote_id, remote_id=remote_id, kind=kind,
            mxid=event_id, room_mxid=portal.mxid, sender_mxid=sender, room_ref=room_ref,
        ))

    # ---- Matrix -> remote ------------------------------------------------------------------

    async def handle_matrix_message(self, portal: Portal, evt: MessageEvent,
                                    before: tuple[bool, str | None] | None = None) -> None:
        """`before`: what `MessageStore.before_relaying` answers, when it was asked already."""
        content = evt.content
        attachment = None
        if isinstance(content, MediaMessageEventContent) and content.url:
            attachment = Attachment(
                content.body or "file",
                (content.info.mimetype if content.info else None) or "application/octet-stream",
                await self.ghosts.bot_intent.download_media(content.url))
        elif content.msgtype not in _TEXT_TYPES or not isinstance(content,
                                                                  TextMessageEventContent):
            log.debug("Not bridging %s message %s yet", content.msgtype, evt.event_id)
            return
        delivered, grant_id = (before if before is not None else
                               await self.storage.messages.before_relaying(evt.event_id))
        if delivered:
            return  # a replayed event: already delivered
        agent = await self._agent(grant_id) if grant_id else None
        connector, room = self._connector(portal), RemoteRoom(portal.remote_id, portal.name)
        edit_of = content.get_edit() if send_kind(evt) is SendKind.EDIT else None
        if edit_of:
            target = await self.storage.messages.get_by_mxid(edit_of)
            if target is None:
                log.warning("Not bridging edit %s: %s was never bridged", evt.event_id, edit_of)
                return
            if target.sender_mxid != evt.sender or target.kind != MessageKind.MESSAGE:
                # Matrix shows an edit only from the original's sender; one that names
                # someone else's message must not rewrite it on the network either.
                log.info("Not bridging edit %s by %s of %s: not its author", evt.event_id,
                         evt.sender, edit_of)
                return
            token, prefix, persona_id = await self._acting_as(
                connector, evt.sender, portal, Action.EDIT, agent)
            sent = await self._deliver(portal, SendKind.EDIT, connector.deliver(MatrixEdit(
                room=room, sender_mxid=evt.sender, event_id=evt.event_id,
                target_id=target.remote_id, text=prefix + content.body,
                html=(prefix + content.formatted_body) if content.formatted_body else None,
                authorization=token,
            )), persona_id)
            await self.archive.capture(Captured.of_matrix(
                CaptureKind.EDIT, portal.network, portal.remote_id, evt,
                sent.remote_id if sent else None, target, text=content.body,
                html=content.formatted_body))
            return
        reply_to = thread_root = None
        if content.get_thread_parent():
            root = await self.storage.messages.get_by_mxid(content.get_thread_parent())
            thread_root = root.remote_id if root else None
        if content.get_reply_to() and (not thread_root or not is_thread_fallback(content)):
            target = await self.storage.messages.get_by_mxid(content.get_reply_to())
            reply_to = _referenced(target) if target else None
        if attachment is None:
            content.trim_reply_fallback()
        formatted = getattr(content, "formatted_body", None)
        token, prefix, persona_id = await self._acting_as(connector, evt.sender, portal,
                                                          Action.SEND, agent)
        first_sends = self.storage.first_sends
        # An agent's first message into each channel always waits for its person.
        if persona_id and (
                (agent and await self.storage.agents.first_into(agent.grant_id,
                                                                portal.remote_id))
                or await first_sends.required(persona_id, portal.remote_id)):
            await first_sends.hold(HeldSend(evt.event_id, evt.room_id, evt.sender, persona_id,
                                            portal.remote_id))
            raise HeldForConfirmation(portal.name or portal.remote_id,
                                      agent.name if agent else None)
        async with self.in_flight.sending((portal.network, portal.remote_id)):
            result = await self._deliver(portal, SendKind.MESSAGE, connector.deliver(MatrixMessage(
                room=room, sender_mxid=evt.sender, event_id=evt.event_id,
                text=prefix + content.body, html=(prefix + formatted) if formatted else None,
                reply_to=reply_to, authorization=token, attachment=attachment,
                thread_root=thread_root,
                sender_avatar=await public_avatar(self.ghosts.bot_intent, self.public_media,
                                                   evt.sender) if prefix else None,
            )), persona_id)
            assert result is not None  # a sent message always gets a remote id
            await self._remember(portal.network, room, result.remote_id, MessageKind.MESSAGE,
                                 evt.event_id, portal, evt.sender, result.room_ref)
            await self.archive.capture(Captured.of_matrix(
                CaptureKind.MESSAGE, portal.network, portal.remote_id, evt, result.remote_id,
                room_ref=result.room_ref, text=content.body, html=formatted,
                attachment=attachment, reply_to=reply_to, thread_root=thread_root,
                persona_id=persona_id))
        if persona_id:
            await first_sends.mark_sent(persona_id, portal.remote_id)

    async def handle_matrix_reaction(self, portal: Portal, evt: ReactionEvent) -> None:
        relation = evt.content.relates_to
        if await self.storage.messages.get_by_mxid(evt.event_id):
            return
        target = await self.storage.messages.get_by_mxid(relation.event_id)
        if target is None:
            log.warning("Not bridging reaction %s: %s was never bridged", evt.event_id,
                        relation.event_id)
            return
        connector, room = self._connector(portal), RemoteRoom(portal.remote_id, portal.name)
        token, _, persona_id = await self._acting_as(connector, evt.sender, portal,
                                                     Action.REACT,
                                                     await self.agent_of(evt.event_id))
        async with self.in_flight.sending((portal.network, portal.remote_id)):
            result = await self._deliver(
                portal, SendKind.REACTION, connector.deliver(MatrixReaction(
                    room=room, sender_mxid=evt.sender, event_id=evt.event_id,
                    target_id=_referenced(target), key=relation.key, authorization=token,
                )), persona_id)
            assert result is not None
            await self._remember(portal.network, room, result.remote_id, MessageKind.REACTION,
                                 evt.event_id, portal, evt.sender)
            await self.archive.capture(Captured.of_matrix(
                CaptureKind.REACTION, portal.network, portal.remote_id, evt, result.remote_id,
                target, key=relation.key))

    async def handle_matrix_redaction(self, portal: Portal, evt: RedactionEvent) -> None:
        target = await self.storage.messages.get_by_mxid(evt.redacts)
        if target is None:
            return
        if target.sender_mxid != evt.sender:
            # A moderator (or anyone with the power to redact) removed someone else's message:
            # that removes the Matrix copy only. The network's own rules decide who may
            # delete there, and the bridge must not delete as the moderator's account.
            log.info("Redaction %s by %s of %s's %s stays in Matrix", evt.event_id,
                     evt.sender, target.sender_mxid, target.mxid)
            await self._deleted(portal, evt, target)
            return
        connector, room = self._connector(portal), RemoteRoom(portal.remote_id, portal.name)
        token, _, persona_id = await self._acting_as(connector, evt.sender, portal,
                                                     Action.DELETE,
                                                     await self.agent_of(evt.event_id))
        await self._deliver(portal, SendKind.REDACTION, connector.deliver(MatrixRedaction(
            room=room, sender_mxid=evt.sender, event_id=evt.event_id,
            target_id=_referenced(target),
            target_is_reaction=target.kind == MessageKind.REACTION,
            reason=evt.content.reason, authorization=token,
        )), persona_id)
        await self._deleted(portal, evt, target)

    async def _deleted(self, portal: Portal, evt: RedactionEvent, target: MessageRow) -> None:
        await self.archive.capture(Captured.of_matrix(
            CaptureKind.DELETION, portal.network, portal.remote_id, evt, None, target))
        await self.storage.messages.delete(target.mxid)

    async def _acting(self, connector: Connector, sender: str, portal: Portal,
                      action: Action) -> tuple[str | None, str]:
        """The impersonation token for this action, and a "Name: " prefix when relaying."""
        token, prefix, _ = await self._acting_as(connector, sender, portal, action)
        return token, prefix

    async def agent_of(self, event_id: str) -> AgentActor | None:
        """The person's agent that asked for this event (the bridge made its id), or None
        when the person sent it themselves."""
        grant_id = await self.storage.agents.act_grant(event_id)
        return await self._agent(grant_id) if grant_id else None

    async def _agent(self, grant_id: str) -> AgentActor | None:
        grant = await self.storage.agents.grant(grant_id)
        if grant is None:
            return None
        return AgentActor(grant.id, grant.name, grant.account_id, frozenset(grant.actions),
                          frozenset(grant.profile_ids), frozenset(grant.networks),
                          grant.active)

    async def _acting_as(self, connector: Connector, sender: str, portal: Portal,
                         action: Action, agent: AgentActor | None = None
                         ) -> tuple[str | None, str, str | None]:
        """Like `_acting`, and which persona acts (None when relaying or not puppeting)."""
        if not connector.requires_authorization or self.authority is None:
            if agent is not None:  # nobody could tell the agent's act from the person's
                raise NotAllowedHere(f"Agents cannot act on {portal.network} on this bridge.")
            return None, "", None
        acting = await self.authority.act(sender, portal, action, agent)
        if acting.relayed_for is None:
            return acting.token, "", acting.persona.id
        name = await self.ghosts.bot_intent.get_displayname(UserID(sender)) or sender
        return acting.token, f"{name}: ", None

    def _connector(self, portal: Portal) -> Connector:
        connector = self.connectors.get(portal.network)
        if connector is None:
            raise NetworkUnavailable(portal.network)
        return connector

    async def _deliver(self, portal: Portal, kind: SendKind, sending: Awaitable[T],
                       persona_id: str | None = None) -> T:
        """Await the connector. What the network refused by name (or the bridge's own token
        check) goes up as it is, with the acting persona attached; anything else is a
        failure it did not explain."""
        started = time.perf_counter()
        try:
            result = await sending
        except (SendRefused, ImpersonationRefused) as e:
            self.metrics.errors.labels(where=f"send_{portal.network}").inc()
            if isinstance(e, SendRefused):
                e.persona_id = persona_id
            raise
        except Exception as e:
            self.metrics.errors.labels(where=f"send_{portal.network}").inc()
            raise DeliveryFailed(portal.network, str(e)) from e
        self.metrics.send_seconds.labels(network=portal.network, direction="to_remote").observe(
            time.perf_counter() - started
        )
        self.metrics.sends.labels(network=portal.network, direction="to_remote", type=kind).inc()
        return result


class HeldForConfirmation(Exception):
    """A first message into a remote room waits for the person's `confirm`."""

    def __init__(self, where: str, agent: str | None = None) -> None:
        whose = f"your agent {agent}'s" if agent else "your"
        super().__init__(
            f"Held: this is {whose} first message into {where}. Send \"confirm\" in your "
            "management room to send it, or \"cancel\" to drop it.")


class DeliveryFailed(Exception):
    """The network did not take a send and did not say why (a timeout, a dropped
    connection): it may have it all the same. The network's own error is the cause."""

    def __init__(self, network: str, reason: str) -> None:
        super().__init__(reason)
        self.network = network


class NetworkUnavailable(Exception):
    def __init__(self, network: str) -> None:
        super().__init__(f"The {network} network is not running on this bridge right now.")
        self.network = network


def _referenced(target: MessageRow) -> str:
    """How replies, reactions and retractions name a message: by the id its room gave it
    where the room gives one (XEP-0461/0444/0424 in an XMPP MUC), else by its own id.
    Corrections (XEP-0308) and read markers keep the sender's id."""
    return target.room_ref or target.remote_id


def _user(mxid: str | None) -> UserID | None:
    return UserID(mxid) if mxid else None
