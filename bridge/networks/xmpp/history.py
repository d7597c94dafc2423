"""A MUC's past for the core's backfill: the room's own archive (XEP-0313 MAM, Prosody's
mod_muc_mam), read with the person's session, each archived stanza made into the events
live bridging makes of it. A direct chat's past is the account's own archive (Prosody's
mod_mam) filtered to the contact: both sides of the conversation, the person's own messages
(from any of their clients) as their own account's."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Protocol

import attrs
from slixmpp import JID, Message
from slixmpp.exceptions import IqError, IqTimeout

from ..base import (
    Attachment,
    RemoteEdit,
    RemoteEvent,
    RemoteMessage,
    RemoteRead,
    RemoteTyping,
    RemoteUser,
)
from ..history import HistoryCursor, HistoryNotReadable, HistoryPage, NoHistory
from .convert import DM_SEPARATOR, Receiver, inbound_events

log = logging.getLogger("relayforge.xmpp.history")
MAM = "urn:xmpp:mam:2"
_PAGE = 50  # archived stanzas per MAM request


class ArchiveSession(Receiver, Protocol):
    client: Any
    # Rooms whose archive this session reads (its rejoins then ask for no MUC history).
    mam_rooms: set[str]

    async def until_ready(self) -> None: ...

    # A contact's vCard photo, fetched once per session (what live direct chats carry).
    async def _avatar(self, contact: str) -> Attachment | None: ...


async def room_has_archive(session: ArchiveSession, room: str) -> bool:
    """Whether the room announces MAM (disco#info); remembered per session."""
    if room in session.mam_rooms:
        return True
    try:
        info = await session.client.plugin["xep_0030"].get_info(jid=JID(room), timeout=20)
    except IqError as e:
        if e.condition in ("forbidden", "registration-required", "not-authorized"):
            raise HistoryNotReadable(f"{room} does not let this account in ({e.condition})"
                                     ) from e
        if e.condition == "item-not-found":
            raise HistoryNotReadable(f"{room} does not exist") from e
        raise
    features = info["disco_info"]["features"]
    if MAM not in features:
        return False
    session.mam_rooms.add(room)
    return True


WithFile = Callable[[RemoteMessage, str], Awaitable[RemoteMessage]]


async def archive_page(session: ArchiveSession, room_id: str, *,
                       after: HistoryCursor | None, not_before_ms: int | None, limit: int,
                       with_file: WithFile) -> HistoryPage:
    """The room's archive (networks/history.py); `with_file` brings in a shared file the
    way live bridging does."""
    contact: str | None = None
    if DM_SEPARATOR in room_id:
        own, contact = room_id.split(DM_SEPARATOR, 1)
        if JID(own).bare != JID(session.jid).bare:
            raise HistoryNotReadable(f"{room_id} is another account's direct chat")
    await session.until_ready()
    # A direct chat is in the account's own archive (its bare JID announces MAM).
    archive = JID(session.jid).bare if contact else room_id
    if not await room_has_archive(session, archive):
        raise NoHistory(f"{archive} keeps no archive (XEP-0313)")
    client = session.client
    if "xep_0313" not in client.plugin:
        client.register_plugin("xep_0313")
    query: dict[str, Any] = ({"jid": None, "with_jid": JID(contact), "rsm": {"max": _PAGE}}
                             if contact else {"jid": JID(room_id), "rsm": {"max": _PAGE}})
    start_ms = not_before_ms
    if after is not None:
        if after.token:
            query["rsm"]["after"] = after.token
        else:
            start_ms = max(after.ts_ms, not_before_ms or 0)
    if start_ms:
        query["start"] = datetime.fromtimestamp(start_ms / 1000, UTC)
    if after is None:
        query["reverse"] = True  # newest first, until enough
    kept: list[tuple[str, int, Message]] = []
    messages = 0
    more = False
    try:
        async with asyncio.timeout(120):
            async for result in client.plugin["xep_0313"].iterate(**query):
                archived = result["mam_result"]
                stanza = archived["forwarded"]["stanza"]
                stamp = archived["forwarded"]["delay"]["stamp"]
                counts = _is_new_message(stanza)
                if after is not None and counts and messages >= limit:
                    more = True
                    break
                kept.append((archived["id"], int(stamp.timestamp() * 1000) if stamp else 0,
                             stanza))
                messages += counts
                if after is None and messages >= limit:
                    break
    except IqError as e:
        if e.condition in ("forbidden", "not-authorized", "registration-required"):
            raise HistoryNotReadable(f"{room_id}'s archive refused this account "
                                     f"({e.condition})") from e
        if e.condition in ("feature-not-implemented", "service-unavailable"):
            raise NoHistory(f"{room_id} keeps no archive ({e.condition})") from e
        raise
    except IqTimeout as e:
        raise TimeoutError(f"{room_id}'s archive did not answer") from e
    if after is None:
        kept.reverse()
    events: list[RemoteEvent] = []
    for archive_id, when, stanza in kept:
        url = stanza["oob"]["url"] if stanza.get_plugin("oob", check=True) else None
        found = (_chat_events(stanza, session, contact, when) if contact
                 else _events(stanza, session, archive_id, when))
        for event in found:
            if url and isinstance(event, RemoteMessage) and event.text == url:
                event = await with_file(event, url)
            events.append(event)
    if contact:
        # The contact's picture comes with their messages, as it does live.
        avatar = await session._avatar(contact)
        if avatar is not None:
            events = [attrs.evolve(e, sender=attrs.evolve(e.sender, avatar=avatar))
                      if e.sender.remote_id == JID(contact).bare else e for e in events]
    events = _fold_corrections(events)
    cursor = HistoryCursor(kept[-1][1], kept[-1][0]) if kept else None
    return HistoryPage(tuple(events), cursor, more)


def _is_new_message(stanza: Message) -> bool:
    """A message of its own (what `limit` counts), not a correction, reaction or marker."""
    if not stanza["body"]:
        return False
    return not any(stanza.get_plugin(name, check=True) and stanza[name]["id"]
                   for name in ("replace", "retract", "reactions"))


def _events(stanza: Message, session: Receiver, archive_id: str, when: int
            ) -> list[RemoteEvent]:
    if not stanza["from"].resource:
        return []  # the room's own notices (subject changes)
    stanza["type"] = "groupchat"
    events = []
    for event in inbound_events(stanza, session):
        if isinstance(event, RemoteTyping | RemoteRead):
            continue  # signals from the past mean nothing now
        # The archive's time, and in a MUC archive its id is the room's stanza-id.
        event = attrs.evolve(event, timestamp_ms=when)
        if isinstance(event, RemoteMessage) and not event.room_ref:
            event = attrs.evolve(event, room_ref=archive_id)
        events.append(event)
    return events


def _chat_events(stanza: Message, session: Receiver, contact: str, when: int
                 ) -> list[RemoteEvent]:
    """A stanza of the account's archive with `contact`, as live bridging makes it of the
    contact's; one the account sent (from any client) is said by the account itself."""
    sent = stanza["from"].bare == JID(session.jid).bare
    if sent:
        stanza["from"] = JID(contact)  # so it lands in the same direct chat
    if stanza["type"] not in ("chat", "normal", ""):
        return []
    stanza["type"] = "chat"
    events = []
    for event in inbound_events(stanza, session):
        if isinstance(event, RemoteTyping | RemoteRead):
            continue
        event = attrs.evolve(event, timestamp_ms=when)
        if sent:
            own = JID(session.jid)
            event = attrs.evolve(event, sender=RemoteUser(own.bare, display_name=own.user))
        events.append(event)
    return events


def _fold_corrections(events: list[RemoteEvent]) -> list[RemoteEvent]:
    """A message corrected within the page arrives as its latest version (XEP-0308: only
    its author may correct it); corrections of older messages stay edits."""
    by_id: dict[str, int] = {}
    out: list[RemoteEvent] = []
    for event in events:
        if isinstance(event, RemoteEdit) and event.target_id in by_id:
            index = by_id[event.target_id]
            original = out[index]
            assert isinstance(original, RemoteMessage)
            if original.sender.remote_id == event.sender.remote_id:
                out[index] = attrs.evolve(original, text=event.text, html=event.html)
            continue
        if isinstance(event, RemoteMessage):
            by_id[event.message_id] = len(out)
        out.append(event)
    return out
