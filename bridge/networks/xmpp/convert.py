"""XMPP stanzas -> neutral remote events (replies, corrections, retractions, reactions)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from ..base import (
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
from .formatting import from_xhtml_im

if TYPE_CHECKING:
    from slixmpp import JID, Message
else:
    _slixmpp = lazy("slixmpp")  # imported when the first stanza is read

    def JID(*args: Any) -> Any:
        return _slixmpp.JID(*args)

DM_SEPARATOR = "|"  # portal id of a direct chat: "<persona jid>|<contact jid>"


class Receiver(Protocol):
    """The linked person's session a stanza arrived on (`connector.Session`)."""

    persona_id: str
    owner: str

    @property
    def jid(self) -> str: ...


def dm_room(own: str, contact: str) -> str:
    return f"{JID(own).bare}{DM_SEPARATOR}{JID(contact).bare}"


def _has(msg: Message, plugin: str, attribute: str = "id") -> str | None:
    if not msg.get_plugin(plugin, check=True):
        return None
    value = msg[plugin][attribute]
    return value or None


def _html(msg: Message) -> str | None:
    if not msg.get_plugin("html", check=True):
        return None
    body = msg["html"].get_body()
    return from_xhtml_im(str(body)) if body else None


STANZA_ID = "{urn:xmpp:sid:0}stanza-id"


def room_stanza_id(msg: Message) -> str | None:
    """The id a MUC gave a groupchat message (XEP-0359 stanza-id `by` the room itself).

    Only the room's own is trusted: the MUC removes any a sender put in claiming to be by
    the room, while one `by` someone else proves nothing."""
    if msg["type"] != "groupchat":
        return None
    room = msg["from"].bare
    for element in msg.xml.findall(STANZA_ID):
        if element.get("by") == room and element.get("id"):
            return element.get("id")
    return None


def inbound_events(msg: Message, session: Receiver) -> list[RemoteEvent]:
    """What a message means for Matrix; empty for history, receipts and our own echoes."""
    # Delayed messages are history a room replays when we rejoin after a gap (we ask only
    # for what came after the last message we saw) or chats stored while we were offline.
    # Either way they are bridged once: the core drops ids it has already seen.
    delayed = msg.get_plugin("delay", check=True) and msg["delay"]["stamp"]
    if msg["type"] == "groupchat":
        room = RemoteRoom(msg["from"].bare, name=msg["from"].user)
        sender = RemoteUser(str(msg["from"]), display_name=msg["from"].resource)
    else:
        contact = msg["from"].bare
        room = RemoteRoom(dm_room(session.jid, contact), name=contact, direct=True)
        sender = RemoteUser(contact, display_name=msg["from"].user)
    # A message that waited keeps the time it was sent.
    when = int(msg["delay"]["stamp"].timestamp() * 1000) if delayed else None
    common = {"room": room, "sender": sender, "receiver": session.owner or None,
              "persona_id": session.persona_id, "timestamp_ms": when}
    message_id = msg["origin_id"]["id"] or msg["id"] or msg["stanza_id"]["id"]
    if target := _has(msg, "retract"):
        return [RemoteRedaction(target_id=target, **common)]
    if target := _has(msg, "reactions"):
        return [RemoteReaction(reaction_id=f"{target}:{sender.remote_id}:{key}",
                               target_id=target, key=key, **common)
                for key in sorted(msg["reactions"]["values"])]
    if target := _has(msg, "displayed"):
        return [RemoteRead(target_id=target, **common)]
    body = msg["body"]
    state = msg["chat_state"] if msg.get_plugin("chat_state", check=True) else ""
    if not body:
        return [RemoteTyping(typing=state == "composing", **common)] if state else []
    if not message_id:
        return []
    if target := _has(msg, "replace"):
        return [RemoteEdit(target_id=target, text=body, html=_html(msg), **common)]
    if url := _has(msg, "oob", "url"):
        # A shared file (XEP-0363 upload + XEP-0066 link); the session fetches it.
        return [RemoteMessage(message_id=message_id, text=url,
                              room_ref=room_stanza_id(msg), **common)]
    reply_to = _has(msg, "reply")
    if reply_to and msg.get_plugin("fallback", check=True):
        body = msg["reply"].strip_fallback_content() or body
    return [RemoteMessage(message_id=message_id, text=body, html=_html(msg),
                          reply_to=reply_to, room_ref=room_stanza_id(msg), **common)]
