"""An agent's acts go exactly the way a person's Matrix message goes.

Each act becomes a Matrix event in the portal room: the bridge bot's copy, so the person sees
there what their agent did, in the room where they would have done it, and the event id is
one only the bridge could have made. The act itself is that event with the person as its
sender, recorded as the agent's (`agent_act`) and put into the durable outbound queue like
any event from the homeserver; the router then asks the core's authority (the policy, the
person's capabilities, the agent's grant, first-send confirmation) and mints the
impersonation token for it. Before any of that the same authority is asked once, without
sending, so a refusal reaches the agent as a clear error and leaves nothing in the room.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import attrs
from mautrix.appservice import IntentAPI
from mautrix.types import (
    EventID,
    EventType,
    MessageEvent,
    MessageType,
    ReactionEvent,
    ReactionEventContent,
    RedactionEvent,
    RedactionEventContent,
    RelatesTo,
    RelationType,
    RoomID,
    TextMessageEventContent,
    UserID,
)

from ..core.authority import AgentActor, NotAllowedHere
from ..core.delivery import Delivery
from ..core.router import Router
from ..db import Portal, Storage
from ..db.message import MessageKind
from ..security.impersonation import Action

AGENT_KEY = "org.relayforge.agent"  # on the bot's copies: which agent, for whom


class ActRefused(Exception):
    """The act is not allowed or not possible; the message says why and what to do."""


@attrs.frozen
class Outcome:
    status: str  # sent, held, done, queued, parked or failed
    detail: str | None = None
    event_id: str | None = None  # the act's Matrix event: the id to edit or react to later


class AgentActs:
    def __init__(self, storage: Storage, router: Router, delivery: Delivery,
                 bot: IntentAPI, wait_seconds: float = 20.0) -> None:
        self.storage = storage
        self.router = router
        self.delivery = delivery
        self.bot = bot
        self.wait_seconds = wait_seconds

    async def _check(self, person: str, portal: Portal, action: Action,
                     agent: AgentActor) -> None:
        authority = self.router.authority
        connector = self.router.connectors.get(portal.network)
        if connector is None:
            raise ActRefused(f"The {portal.network} network is not running on this bridge.")
        if authority is None or not connector.requires_authorization:
            raise ActRefused(f"Agents cannot act on {portal.network} on this bridge.")
        try:
            # The token it mints is never used: it expires unused within seconds.
            await authority.act(person, portal, action, agent)
        except NotAllowedHere as e:
            raise ActRefused(str(e)) from e

    def _tag(self, agent: AgentActor, person: str) -> dict[str, Any]:
        return {AGENT_KEY: {"name": agent.name, "id": agent.grant_id, "for": person}}

    async def _queue(self, portal: Portal, agent: AgentActor, evt: Any) -> Outcome:
        await self.storage.agents.record_act(evt.event_id, agent.grant_id, portal.remote_id,
                                             evt.serialize())
        await self.delivery.enqueue(portal, evt)
        return attrs.evolve(await self._outcome(evt.event_id), event_id=evt.event_id)

    async def _outcome(self, event_id: str) -> Outcome:
        """Wait (a little) for the queue to send it, so the agent learns what happened."""
        deadline = time.monotonic() + self.wait_seconds
        while True:
            status, detail = await self.storage.agents.outcome(event_id)
            if status in ("sent", "held", "done", "failed", "parked"):
                return Outcome(status, detail)
            if time.monotonic() >= deadline:
                return Outcome(status, detail)
            await asyncio.sleep(0.2)

    async def _target(self, portal: Portal, event_id: str, person: str, what: str
                      ) -> tuple[Any, UserID]:
        """The message an edit, deletion or reaction is about, and its Matrix sender."""
        row = await self.storage.messages.get_by_mxid(EventID(event_id))
        if row is None or row.room_mxid != portal.mxid or row.kind != MessageKind.MESSAGE:
            raise ActRefused(f"There is no bridged message {event_id} in this room to {what}.")
        evt = await self.bot.get_event(RoomID(portal.mxid or ""), EventID(event_id))
        return row, evt.sender

    async def send(self, person: str, portal: Portal, agent: AgentActor, text: str,
                   reply_to: str | None = None, thread_root: str | None = None) -> Outcome:
        if not text.strip():
            raise ActRefused("The message is empty.")
        await self._check(person, portal, Action.SEND, agent)
        room = RoomID(portal.mxid or "")
        content = TextMessageEventContent(msgtype=MessageType.TEXT, body=text)
        for ref, what in ((thread_root, "thread root"), (reply_to, "reply target")):
            row = await self.storage.messages.get_by_mxid(EventID(ref)) if ref else None
            if ref and (row is None or row.room_mxid != portal.mxid):
                raise ActRefused(f"There is no bridged message {ref} in this room to use as "
                                 f"{what}.")
        if thread_root:
            content.set_thread_parent(EventID(thread_root))
        if reply_to:
            content.set_reply(EventID(reply_to))
        copy = TextMessageEventContent(msgtype=MessageType.NOTICE,
                                       body=f"{agent.name} (agent of {person}): {text}")
        copy.relates_to = content.relates_to
        copy[AGENT_KEY] = self._tag(agent, person)[AGENT_KEY]
        event_id = await self.bot.send_message(room, copy)
        return await self._queue(portal, agent, MessageEvent(
            type=EventType.ROOM_MESSAGE, room_id=room, event_id=event_id,
            sender=UserID(person), timestamp=int(time.time() * 1000), content=content))

    async def edit(self, person: str, portal: Portal, agent: AgentActor, event_id: str,
                   text: str) -> Outcome:
        await self._check(person, portal, Action.EDIT, agent)
        row, matrix_sender = await self._target(portal, event_id, person, "edit")
        if row.sender_mxid != person:
            raise ActRefused("Only messages sent as you can be edited.")
        room = RoomID(portal.mxid or "")
        if matrix_sender == self.bot.mxid:  # the bridge's copy of an agent's message
            copy = TextMessageEventContent(msgtype=MessageType.NOTICE,
                                           body=f"{agent.name} (agent of {person}): {text}")
            copy.set_edit(EventID(event_id))
        else:  # the person's own Matrix message: the bot cannot edit it, so it says so
            copy = TextMessageEventContent(msgtype=MessageType.NOTICE,
                                           body=f"{agent.name} edited this as {person}: {text}")
            copy.set_reply(EventID(event_id))
        copy[AGENT_KEY] = self._tag(agent, person)[AGENT_KEY]
        copy_id = await self.bot.send_message(room, copy)
        content = TextMessageEventContent(msgtype=MessageType.TEXT, body=text)
        content.set_edit(EventID(event_id))
        return await self._queue(portal, agent, MessageEvent(
            type=EventType.ROOM_MESSAGE, room_id=room, event_id=copy_id,
            sender=UserID(person), timestamp=int(time.time() * 1000), content=content))

    async def delete(self, person: str, portal: Portal, agent: AgentActor, event_id: str
                     ) -> Outcome:
        await self._check(person, portal, Action.DELETE, agent)
        row, _ = await self._target(portal, event_id, person, "delete")
        if row.sender_mxid != person:
            raise ActRefused("Only messages sent as you can be deleted.")
        room = RoomID(portal.mxid or "")
        reason = f"deleted by {agent.name}, agent of {person}"
        redaction_id = await self.bot.redact(room, EventID(event_id), reason=reason)
        return await self._queue(portal, agent, RedactionEvent(
            type=EventType.ROOM_REDACTION, room_id=room, event_id=redaction_id,
            sender=UserID(person), timestamp=int(time.time() * 1000),
            redacts=EventID(event_id), content=RedactionEventContent(reason=reason)))

    async def react(self, person: str, portal: Portal, agent: AgentActor, event_id: str,
                    key: str) -> Outcome:
        if not key or len(key) > 64:
            raise ActRefused("A reaction is one emoji (or a short text).")
        await self._check(person, portal, Action.REACT, agent)
        await self._target(portal, event_id, person, "react to")
        room = RoomID(portal.mxid or "")
        reaction_id = await self.bot.react(room, EventID(event_id), key)
        return await self._queue(portal, agent, ReactionEvent(
            type=EventType.REACTION, room_id=room, event_id=reaction_id,
            sender=UserID(person), timestamp=int(time.time() * 1000),
            content=ReactionEventContent(relates_to=RelatesTo(
                RelationType.ANNOTATION, EventID(event_id), key))))
