"""Sends each Matrix event to whoever handles it: the management bot or a portal's router."""

from __future__ import annotations

import logging
from typing import Any

from mautrix.errors import DecryptionError, SessionNotFound
from mautrix.types import (
    EncryptedEvent,
    Event,
    EventType,
    Membership,
    MessageEvent,
    MessageType,
    ReactionEvent,
    ReceiptEvent,
    ReceiptType,
    RedactionEvent,
    StateEvent,
    TypingEvent,
    UserID,
)

from ..core.delivery import Delivery
from ..core.matrix_side import PortalDirectory
from ..core.router import Router
from ..db import Portal
from ..db.encryption_notice import EncryptionNoticeStore
from ..matrix.double_puppet import sent_as_double_puppet
from ..metrics import Metrics
from .bot import ManagementBot

log = logging.getLogger("relayforge.dispatch")

ENCRYPTED_IN_PORTAL = (
    "This bridge cannot read encrypted messages yet: what is sent encrypted here does not "
    "reach {network}. This is said once per room.")
ENCRYPTION_ON_IN_PORTAL = (
    "Encryption was turned on in this room. This bridge cannot read encrypted messages yet, "
    "so from now on what is written here will not reach {network} (encryption cannot be "
    "turned off again in a room).")
ENCRYPTED_TO_BOT = (
    "I cannot read encrypted messages yet, so I cannot see your commands here. Start a new "
    "direct chat with me with encryption off.")
KEY_MISSING = (
    "I could not read this message: its encryption key never reached the bridge{why}, so it "
    "{where}. Please send it again. If this keeps happening, your client may be set to send "
    "keys to verified devices only; allow the bridge's device ({device}).")
UNDECRYPTABLE = (
    "I could not decrypt this message, so it {where}. Please send it again.")
ENCRYPTION_ON_WITH_BOT = (
    "Encryption was turned on in this room. I cannot read encrypted messages yet, so I will "
    "not see your commands here: start a new direct chat with me with encryption off.")


class NotQueued(Exception):
    """An event for a portal could not be kept in the outbound queue (the database failed)."""


class MatrixDispatcher:
    def __init__(self, bot: ManagementBot, router: Router, portals: PortalDirectory,
                 delivery: Delivery, encryption_notices: EncryptionNoticeStore,
                 metrics: Metrics) -> None:
        self.bot = bot
        self.router = router
        self.portals = portals
        self.encryption_notices = encryption_notices
        self.delivery = delivery
        self.metrics = metrics
        # Who was typing in each portal, to tell the network when they stop.
        self._typing: dict[str, set[str]] = {}
        # The bot's device (bridge.matrix.crypto.BridgeCrypto) when encryption is on; None
        # means encrypted rooms get the one notice that the bridge cannot read them.
        self.encryption: Any = None
        # The listener asks this before it records a transaction as handled (see there).
        if (appservice := getattr(bot.intent, "appservice", None)) is not None:
            appservice.repeatable = self.repeatable

    def repeatable(self, raw: dict[str, Any]) -> bool:
        """Whether `_handle` drops this raw event however often it comes: a room event (not
        state: a ghost's membership is acted on) sent by the bridge's bot or one of its
        ghosts, which is the bridge hearing back what it sent. A person's own Matrix user
        (double puppet) is not a bridge user: what it sends is looked at, so not repeatable."""
        sender = raw.get("sender")
        return ("state_key" not in raw and isinstance(sender, str)
                and self.bot.is_bridge_user(UserID(sender)))

    async def handle(self, evt: Event) -> None:
        """Handle one event; a failure is logged and counted but never blocks the transaction,
        so one bad event cannot stall every event behind it. What people send in portals goes
        to the durable outbound queue, which reports its own outcomes; an event that could not
        be put there fails the transaction, so the homeserver sends it again (acknowledging
        the transaction would lose the event)."""
        kind = str(evt.type)
        self.metrics.events.labels(type=kind).inc()
        try:
            with self.metrics.event_seconds.labels(type=kind).time():
                await self._handle(evt)
        except NotQueued:
            self.metrics.errors.labels(where="matrix_event").inc()
            log.exception("Could not queue %s %s in %s; the transaction fails and the "
                          "homeserver will send it again", kind, evt.event_id,
                          getattr(evt, "room_id", "?"))
            raise
        except Exception:
            self.metrics.errors.labels(where="matrix_event").inc()
            log.exception("Failed to handle %s %s in %s", kind, evt.event_id,
                          getattr(evt, "room_id", "?"))

    async def _handle(self, evt: Event) -> None:
        if evt.type == EventType.ROOM_MEMBER:
            if self.encryption is not None:
                await self.encryption.member_event(evt)
            await self._member(evt)
            return
        if self.encryption is not None and evt.type == EventType.ROOM_ENCRYPTION:
            self.encryption.room_encrypted(evt.room_id)  # what is sent there is encrypted
            return
        if self.encryption is not None and isinstance(evt, EncryptedEvent):
            await self._decrypt(evt)
            return
        if evt.type in (EventType.ROOM_ENCRYPTED, EventType.ROOM_ENCRYPTION):
            await self._encryption(evt)
            return
        if evt.type in (EventType.TYPING, EventType.RECEIPT):
            await self._ephemeral(evt)
            return
        if evt.type not in (EventType.ROOM_MESSAGE, EventType.REACTION,
                            EventType.ROOM_REDACTION):
            return
        if self.bot.is_bridge_user(evt.sender):
            return
        if sent_as_double_puppet(evt.content, self.bot.intent.api.bridge_name):
            return  # the bridge said it as the person, from the network: never back out
        if isinstance(evt, MessageEvent):
            portal = await self._portal_of(evt)
            if _is_command_candidate(evt) and (
                portal is None or self.bot.addresses_bot(evt.content.body)
            ):
                await self.bot.handle_message(evt.room_id, evt.event_id, evt.sender,
                                              evt.content.body)
            elif portal is not None:
                await self._enqueue(portal, evt)
            else:
                await self._not_bridged(evt)
            return
        if not isinstance(evt, ReactionEvent | RedactionEvent):
            return
        portal = await self._portal_of(evt)
        if portal is not None:
            await self._enqueue(portal, evt)
        else:
            await self._not_bridged(evt)

    async def _portal_of(self, evt: Event) -> Portal | None:
        """The portal of the event's room; a lookup that fails must not pass for "not a
        portal", which would drop what the person wrote."""
        try:
            return await self.portals.get_by_mxid(evt.room_id)
        except Exception as e:
            raise NotQueued(f"could not look up the portal of {evt.room_id}") from e

    async def _enqueue(self, portal: Portal, evt: Event) -> None:
        try:
            await self.delivery.enqueue(portal, evt)
        except Exception as e:
            raise NotQueued(f"could not queue {evt.event_id}") from e

    async def _not_bridged(self, evt: Event) -> None:
        """Nothing is sent anywhere for it: say so, so a missing message can be traced."""
        if await self.bot.management_rooms.is_management_room(evt.room_id):
            log.debug("%s %s in a management room is not a command", evt.type, evt.event_id)
            return
        log.warning("Not bridging %s %s from %s: %s is not a portal of this bridge", evt.type,
                    evt.event_id, evt.sender, evt.room_id)

    async def _decrypt(self, evt: EncryptedEvent) -> None:
        """Decrypt with the bot's device and handle what was inside like any event. A key
        that has not arrived yet is waited for (and asked for) in the background."""
        if self.bot.is_bridge_user(evt.sender):
            return  # the bridge's own messages, coming back
        try:
            decrypted = await self.encryption.decrypt(evt)
        except SessionNotFound:
            self.encryption.decrypt_later(evt, self.handle, self._key_missing)
            return
        except DecryptionError as e:
            log.warning("Could not decrypt %s in %s: %s", evt.event_id, evt.room_id, e)
            await self._tell_undecryptable(evt, UNDECRYPTABLE, "")
            return
        await self._handle(decrypted)

    async def _key_missing(self, missing: Any) -> None:
        why = " (the sender's device refused to share it)" if missing.withheld else ""
        await self._tell_undecryptable(missing.event, KEY_MISSING, why)

    async def _tell_undecryptable(self, evt: EncryptedEvent, text: str, why: str) -> None:
        portal = await self.portals.get_by_mxid(evt.room_id)
        if portal is not None:
            where = f"did not reach {portal.network}"
        elif await self.bot.management_rooms.is_management_room(evt.room_id):
            where = "was not read as a command"
        else:
            return  # a room the bridge does not serve
        await self.bot.reply(evt.room_id, evt.event_id, text.format(
            why=why, where=where, device=self.encryption.device_id))

    async def _ephemeral(self, evt: Event) -> None:
        portal = await self.portals.get_by_mxid(evt.room_id)
        if portal is None:
            return
        if isinstance(evt, TypingEvent):
            now = {u for u in evt.content.user_ids if not self.bot.is_bridge_user(u)}
            before = self._typing.get(evt.room_id, set())
            self._typing[evt.room_id] = now
            for user in now - before:
                await self.router.handle_matrix_typing(portal, user, True)
            for user in before - now:
                await self.router.handle_matrix_typing(portal, user, False)
        elif isinstance(evt, ReceiptEvent):
            for event_id, receipts in evt.content.items():
                for user in receipts.get(ReceiptType.READ, {}):
                    if not self.bot.is_bridge_user(user):
                        await self.router.handle_matrix_read(portal, user, event_id)

    async def _encryption(self, evt: Event) -> None:
        """The bridge cannot decrypt yet: say so instead of dropping what people wrote. Once
        per room for encrypted messages (remembered across restarts); each time encryption is
        turned on."""
        if self.bot.is_bridge_user(evt.sender):
            return
        portal = await self.portals.get_by_mxid(evt.room_id)
        if portal is not None:
            where = portal.network
            turned_on, cannot_read = ENCRYPTION_ON_IN_PORTAL, ENCRYPTED_IN_PORTAL
        elif await self.bot.management_rooms.is_management_room(evt.room_id):
            where = ""
            turned_on, cannot_read = ENCRYPTION_ON_WITH_BOT, ENCRYPTED_TO_BOT
        else:
            return  # a space or a room the bridge does not serve
        first_time = await self.encryption_notices.first_time(evt.room_id)
        if evt.type == EventType.ROOM_ENCRYPTION:
            await self.bot.reply(evt.room_id, None, turned_on.format(network=where))
        elif first_time:
            log.info("Encrypted event %s in %s cannot be read", evt.event_id, evt.room_id)
            await self.bot.reply(evt.room_id, evt.event_id, cannot_read.format(network=where))

    async def _member(self, evt: StateEvent) -> None:
        if evt.state_key == self.bot.mxid and evt.content.membership == Membership.INVITE:
            await self.bot.handle_invite(evt)
        elif evt.content.membership in (Membership.LEAVE, Membership.BAN):
            await self.bot.handle_leave(evt)


def _is_command_candidate(evt: MessageEvent) -> bool:
    """Only plain text typed by a person is a command: not notices, edits or media."""
    content = evt.content
    return (
        content.msgtype == MessageType.TEXT
        and isinstance(getattr(content, "body", None), str)
        and content.get_edit() is None
    )
