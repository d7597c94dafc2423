"""The XMPP connector: linking with a password, one session per person, MUCs and chats."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import secrets
import ssl
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import attrs
from yarl import URL

from ...core.media import MediaRefused
from ..base import (
    Attachment,
    Connector,
    CredentialsRejected,
    MatrixEdit,
    MatrixMessage,
    MatrixReaction,
    MatrixRead,
    MatrixRedaction,
    MatrixTyping,
    RemoteEvent,
    RemoteInvite,
    RemoteMessage,
    RemoteRoom,
    RemoteUser,
    SendResult,
    Unsupported,
)
from ..history import HistoryCursor, HistoryNotReadable, HistoryPage
from ..lazy import lazy
from ..login import Field, LinkedAccount, LoginFailed, LoginStep
from ..seen import SeenIds
from .convert import DM_SEPARATOR, inbound_events, room_stanza_id
from .formatting import to_xhtml_im

if TYPE_CHECKING:
    import slixmpp
    from slixmpp import JID, Message

    from .client import XmppClient
else:
    # slixmpp is imported when the first session opens or the first login starts.
    slixmpp = lazy("slixmpp")

    def JID(*args: Any) -> Any:
        return slixmpp.JID(*args)

log = logging.getLogger("relayforge.xmpp")
LOGIN_TIMEOUT = 30
REFLECTION_TIMEOUT = 10  # seconds a MUC has to reflect our message with its stanza-id


def _iq_failures() -> tuple[type[Exception], ...]:
    """An IQ the server refused or did not answer in time."""
    return slixmpp.exceptions.IqError, slixmpp.exceptions.IqTimeout


class RoomRefused(Unsupported):
    """The MUC answered our message with an error (XEP-0045 7.4: a visitor without voice,
    not an occupant any more, a message too large): it was not posted, and sending the same
    again is refused again, so the person is told."""


def _refusal(msg: Message) -> Exception:
    """What an error stanza answering our groupchat message means for the send: a refusal,
    or (type "wait": the room is busy) a passing failure the outbound queue retries, after
    looking the message up in the room's archive."""
    error = msg["error"]
    condition = error["condition"] or "undefined-condition"
    said = f"{condition}: {error['text']}" if error["text"] else condition
    if error["type"] == "wait":
        return ConnectionError(f"the room asked to wait ({said})")
    return RoomRefused(f"the room {msg['from'].bare} refused it ({said})")


def _file_name(url: str) -> str:
    try:
        return unquote(URL(url).name) or "file"
    except ValueError:
        return "file"


def origin_id(event_id: str) -> str:
    """The id and XEP-0359 origin-id of the message sent for a Matrix event: the same on
    every attempt, so crash recovery finds it in the archive (`find_sent`)."""
    return "rf-" + uuid.uuid5(uuid.NAMESPACE_URL, f"relayforge:matrix-event:{event_id}").hex


class Session:
    """A person's live connection, reconnecting with back-off until closed."""

    def __init__(self, connector: XmppConnector, persona_id: str, jid: str, password: str,
                 owner: str) -> None:
        self.connector = connector
        self.persona_id = persona_id
        self.owner = owner
        self.client = connector.make_client(jid, password)
        self.rooms: dict[str, str] = {}  # room jid -> our nick
        self.last_seen: dict[str, datetime] = {}  # room jid -> when we last heard from it
        # Rooms whose archive the core reads (networks/history.py): a rejoin asks them for
        # no MUC history, and the core catches up from the archive instead.
        self.mam_rooms: set[str] = set()
        self._was_ready = False
        self.avatars: dict[str, Attachment | None] = {}  # contact jid -> vCard photo
        self.ready = asyncio.Event()
        # Our groupchat sends waiting for the room's reflection: message id -> stanza-id
        # (or the room's refusal), and the room each was sent to.
        self.reflections: dict[str, asyncio.Future[str | None]] = {}
        self.reflecting: dict[str, str] = {}
        self.closing = False
        self.auth_failed = False
        self.client.add_event_handler("session_start", self._started)
        self.client.add_event_handler("disconnected", self._disconnected)
        self.client.add_event_handler("failed_all_auth", self._auth_failed)
        # slixmpp's "message" event only fires for stanzas with a <body>; reactions, chat
        # states, markers and retractions may have none, so take every message stanza.
        self.client.register_handler(slixmpp.xmlstream.handler.CoroutineCallback(
            "relayforge messages", slixmpp.xmlstream.matcher.StanzaPath("message"),
            self._message))
        self.client.add_event_handler("groupchat_direct_invite", self._invited)

    @property
    def jid(self) -> str:
        return self.client.boundjid.bare

    async def until_ready(self) -> None:
        """Wait for a reconnecting session (the outbound queue retries if it takes too long);
        a password the server refused fails at once."""
        # Counted when the server refused the sign-in (`_auth_failed`), not again per send.
        if self.auth_failed:
            raise CredentialsRejected("the XMPP server refused the stored password",
                                      reported=True)
        await asyncio.wait_for(self.ready.wait(), timeout=20)
        if self.auth_failed:
            raise CredentialsRejected("the XMPP server refused the stored password",
                                      reported=True)

    def connect(self) -> None:
        self.client.connect()

    async def _started(self, _: Any) -> None:
        self.client.send_presence()
        with contextlib.suppress(*_iq_failures()):
            await self.client.get_roster()
        for room, nick in list(self.rooms.items()):
            await self._join(room, nick)
        self.auth_failed = False
        self.ready.set()
        gap = [room for room in self.rooms if room in self.mam_rooms]
        if self._was_ready and self.connector.sink is not None:
            # Reconnected: what the rooms said meanwhile comes from their archives, and what
            # the direct chats said from the account's own (the core catches up all of a
            # session's direct chats on any gap, so also when no room is named).
            await self.connector.sink.history_gap(self.persona_id, gap)
        self._was_ready = True

    async def _auth_failed(self, _: Any) -> None:
        # The stored password no longer works (changed, or the account was reset): sends
        # fail at once (the persona turns read-only until relinked), and the core counts
        # these and stops the persona when they repeat.
        self.auth_failed = True
        await self.connector.report_auth_failure(
            self.persona_id, "the XMPP server refused the stored password")

    async def _disconnected(self, _: Any) -> None:
        self.ready.clear()
        delay = 1.0
        while not self.closing:
            await asyncio.sleep(delay)
            if self.closing:
                return
            log.info("Reconnecting XMPP session of %s", self.jid)
            self.client.connect()
            try:
                await asyncio.wait_for(self.ready.wait(), timeout=30)
                return
            except TimeoutError:
                delay = min(delay * 2, 60)

    async def _join(self, room: str, nick: str) -> None:
        # First join: no history (it predates the mapping). Rejoin after a gap: what was said
        # since we last heard from the room, so nothing is lost while we were away.
        since = self.last_seen.get(room) if room not in self.mam_rooms else None
        await self.client.plugin["xep_0045"].join_muc_wait(
            JID(room), nick, timeout=20,
            **({"since": since} if since else {"maxstanzas": 0}))

    async def join(self, room: str, since: datetime | None = None) -> None:
        nick = self.rooms.get(room) or JID(self.jid).user
        self.rooms[room] = nick
        if since and room not in self.last_seen:
            self.last_seen[room] = since
        await self.ready.wait()
        await self._join(room, nick)

    async def _message(self, msg: Message) -> None:
        if msg["type"] == "error":
            # A room refusing one of our messages answers it with an error of the same id
            # (from the room itself); nothing of an error is bridged.
            waiting = self.reflections.get(msg["id"])
            if (waiting is not None and not waiting.done()
                    and self.reflecting.get(msg["id"]) == msg["from"].bare):
                waiting.set_exception(_refusal(msg))
            return
        own_id = msg["origin_id"]["id"] or msg["id"]
        waiting = self.reflections.get(own_id) if msg["type"] == "groupchat" else None
        if (waiting is not None and not waiting.done()
                and msg["from"].resource == self.rooms.get(msg["from"].bare)):
            waiting.set_result(room_stanza_id(msg))
        if self.connector.sent_by_us(own_id):
            return  # the room reflecting what the bridge itself just sent
        if msg["type"] == "groupchat":
            room = msg["from"].bare
            if room not in self.rooms or not msg["from"].resource:
                return
            self.last_seen[room] = datetime.now(UTC) - timedelta(seconds=2)
        elif msg["type"] not in ("chat", "normal"):
            return
        url = msg["oob"]["url"] if msg.get_plugin("oob", check=True) else None
        avatar = await self._avatar(msg["from"].bare) if msg["type"] == "chat" else None
        for event in inbound_events(msg, self):
            if avatar is not None:
                event = attrs.evolve(event, sender=attrs.evolve(event.sender, avatar=avatar))
            if url and isinstance(event, RemoteMessage) and event.text == url:
                event = await self.connector.with_file(event, url)
            await self.connector.emit(event)

    async def _invited(self, msg: Message) -> None:
        """XEP-0249: someone invited this person to a room; mapping rules decide."""
        room = JID(msg["groupchat_invite"]["jid"]).bare
        await self.connector.emit(RemoteInvite(
            room=RemoteRoom(room, name=JID(room).user),
            sender=RemoteUser(msg["from"].bare, display_name=msg["from"].user),
            receiver=self.owner or None, persona_id=self.persona_id))

    async def _avatar(self, contact: str) -> Attachment | None:
        """A contact's vCard photo (XEP-0054), fetched once per session."""
        if contact not in self.avatars:
            self.avatars[contact] = None
            try:
                iq = await self.client.plugin["xep_0054"].get_vcard(JID(contact), timeout=10)
                photo = iq["vcard_temp"]["PHOTO"]
                data = photo["BINVAL"]
                if data:
                    self.avatars[contact] = Attachment("avatar", photo["TYPE"] or "image/png",
                                                       bytes(data))
            except _iq_failures() as e:
                log.debug("No vCard for %s: %s", contact, e)
        return self.avatars[contact]

    async def send(self, msg: Message) -> SendResult:
        """Send a message; in a MUC, wait for the room to reflect it (XEP-0045 7.4) to learn
        the stanza-id the room gave it, which replies, reactions and retractions there must
        name. A room that refuses it answers with an error instead: the send fails
        (`RoomRefused`). A room that does neither in time (slow) most likely posted it: it
        counts as sent, with only our own id (its late reflection is not bridged back, and
        no second attempt is made, so it is neither lost nor sent twice)."""
        if msg["type"] != "groupchat":
            msg.send()
            return SendResult(msg["id"])
        reflected: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self.reflections[msg["id"]] = reflected
        self.reflecting[msg["id"]] = JID(msg["to"]).bare
        room_ref = None
        try:
            msg.send()
            with contextlib.suppress(TimeoutError):
                room_ref = await asyncio.wait_for(reflected, REFLECTION_TIMEOUT)
        finally:
            self.reflections.pop(msg["id"], None)
            self.reflecting.pop(msg["id"], None)
        return SendResult(msg["id"], room_ref=room_ref)

    async def close(self) -> None:
        self.closing = True
        self.client.disconnect()


class XmppConnector(Connector):
    network = "xmpp"

    def __init__(self, settings: Mapping[str, Any] | None = None) -> None:
        super().__init__(settings)
        self.sessions: dict[str, Session] = {}
        # Ids of stanzas our sessions sent, so their reflections are not bridged back.
        self._sent = SeenIds(10_000)

    def remember_sent(self, stanza_id: str) -> None:
        self._sent.add(stanza_id)

    def sent_by_us(self, stanza_id: str | None) -> bool:
        return bool(stanza_id) and stanza_id in self._sent

    async def with_file(self, event: RemoteMessage, url: str) -> RemoteMessage:
        """Fetch a shared file so it can be uploaded to Matrix. The link comes from whoever
        sent the message, so it goes through the core's media fetcher (no internal
        addresses, size and time limits); when refused, the link stays as the text and the
        room is told why."""
        ssl_context = ssl.create_default_context()
        if self.settings.get("ca_file"):
            ssl_context.load_verify_locations(self.settings["ca_file"])
        try:
            fetched = await self.fetch_media(url, ssl_context=ssl_context)
        except MediaRefused as e:
            log.warning("Shared file from %s not bridged: %s", event.sender.remote_id, e)
            return attrs.evolve(event, file_refused=e.notice(_file_name(url)))
        name = _file_name(url)
        return attrs.evolve(event, text=name,
                            attachment=Attachment(name, fetched.mimetype, fetched.data))

    def make_client(self, jid: str, password: str) -> XmppClient:
        from .client import XmppClient  # a slixmpp client class: imports slixmpp

        return XmppClient(jid, password, ca_file=self.settings.get("ca_file") or None,
                          nameserver=self.settings.get("nameserver") or None)

    async def disconnect(self) -> None:
        for session in list(self.sessions.values()):
            await session.close()
        self.sessions.clear()

    async def emit(self, event: RemoteEvent) -> None:
        # A stanza that cannot be bridged must not end the session's stream handling.
        try:
            await super().emit(event)
        except Exception:
            log.exception("Could not bridge an XMPP event into Matrix")

    # ---- linking ---------------------------------------------------------------------------

    def login_flows(self) -> list[str]:
        return ["password"]

    def workspace_of(self, channel: str) -> str:
        # A MUC's service (conference.example.org); a direct chat's is the contact's server.
        try:
            return JID(channel.split(DM_SEPARATOR)[-1]).domain
        except slixmpp.InvalidJID:
            return ""

    async def begin_login(self, identifier: str | None) -> LoginStep:
        try:
            jid = JID(identifier or "")
        except slixmpp.InvalidJID:
            jid = JID()
        if not jid.user or not jid.domain:
            raise LoginFailed(f'"{identifier}" is not an XMPP address like alice@example.org.')
        return LoginStep(message=f"Send the password of {jid.bare}.", state={"jid": jid.bare},
                         fields=[Field("password", f"Password of {jid.bare}", secret=True)])

    async def continue_login(self, state: dict[str, Any], answers: dict[str, str]
                             ) -> LoginStep | LinkedAccount:
        jid, password = state["jid"], answers.get("password", "")
        if not password:
            raise LoginFailed("The password is empty.")
        client = self.make_client(jid, password)
        outcome: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        def settle(result: str) -> None:
            if not outcome.done():
                outcome.set_result(result)

        client.add_event_handler("session_start", lambda _: settle("ok"))
        client.add_event_handler("failed_all_auth", lambda _: settle("auth"))
        # One address refusing is not the end (RFC 6120 3.2: try the next address, then the
        # next SRV target); only when every one failed is the server unreachable.
        client.add_event_handler("all_addresses_failed",
                                 lambda errors: settle("connect:" + "; ".join(errors)))
        from .client import tls_refusal

        client.add_event_handler("ssl_invalid_chain",
                                 lambda error: settle(f"tls:{tls_refusal(error)}"))
        client.connect()
        try:
            result = await asyncio.wait_for(outcome, LOGIN_TIMEOUT)
        except TimeoutError:
            result = "timeout"
        try:
            if result == "auth":
                raise LoginFailed(f"The XMPP server refused the password for {jid}. Nothing "
                                  "was stored; try again with the right password.")
            if result.startswith("tls:"):
                raise LoginFailed(
                    f"The XMPP server of {JID(jid).domain} presented a certificate the bridge "
                    f"does not trust ({result.removeprefix('tls:')}), so the password was not "
                    "sent. Nothing was stored.")
            if result != "ok":
                raise LoginFailed(f"Could not reach the XMPP server of {JID(jid).domain} "
                                  f"({result.removeprefix('connect:')}). Nothing was stored.")
            return await self._verify(client, jid, password)
        finally:
            client.disconnect()

    async def _verify(self, client: XmppClient, jid: str, password: str) -> LinkedAccount:
        """The verification ping: the roster and the server's features."""
        roster = await client.get_roster()
        contacts = len(roster["roster"]["items"])
        info = await client.plugin["xep_0030"].get_info(jid=JID(jid).domain, timeout=15)
        features = sorted(info["disco_info"]["features"])
        return LinkedAccount(
            external_user_id=JID(jid).bare, display_name=JID(jid).user, scopes=["c2s"],
            credentials={"password": password},
            verified=[f"signed in with {client.mechanism} {client.transport_description()}",
                      f"roster fetched: {contacts} contact(s)",
                      f"server features: {len(features)}"],
        )

    # ---- sessions --------------------------------------------------------------------------

    async def open_session(self, persona_id: str, external_user_id: str,
                           credentials: dict[str, str], owner: str) -> None:
        await self.close_session(persona_id)
        session = Session(self, persona_id, f"{external_user_id}/relayforge-"
                          f"{secrets.token_hex(3)}", credentials["password"], owner)
        self.sessions[persona_id] = session
        session.connect()
        try:
            # Linking reports success once the person is online; at start-up we do not wait
            # long for a server that is down (the session keeps retrying).
            await asyncio.wait_for(session.ready.wait(), timeout=15)
        except TimeoutError:
            log.warning("XMPP session of %s is not up yet; it keeps trying", external_user_id)

    async def close_session(self, persona_id: str) -> None:
        session = self.sessions.pop(persona_id, None)
        if session:
            await session.close()

    async def join(self, persona_id: str, remote_room_id: str,
                   since_ms: int | None = None) -> RemoteRoom:
        session = self._session(persona_id)
        since = datetime.fromtimestamp(since_ms / 1000, UTC) if since_ms else None
        await asyncio.wait_for(session.join(remote_room_id, since), timeout=60)
        return RemoteRoom(remote_room_id, name=JID(remote_room_id).user)

    async def fetch_history(self, persona_id: str, room: RemoteRoom, *,
                            after: HistoryCursor | None, not_before_ms: int | None,
                            limit: int) -> HistoryPage:
        """A MUC's archive, read as the person (networks/history.py)."""
        session = self.sessions.get(persona_id)
        if session is None:
            raise HistoryNotReadable("that XMPP account has no open session")
        from .history import archive_page  # imports slixmpp: only once someone is linked

        return await archive_page(session, room.remote_id, after=after,
                                  not_before_ms=not_before_ms, limit=limit,
                                  with_file=self.with_file)

    def _session(self, persona_id: str | None) -> Session:
        session = self.sessions.get(persona_id or "")
        if session is None:
            raise LoginFailed("that XMPP account has no open session")
        return session

    # ---- Matrix -> XMPP --------------------------------------------------------------------

    def _target(self, session: Session, room_id: str) -> tuple[JID, str]:
        if DM_SEPARATOR in room_id:
            return JID(room_id.split(DM_SEPARATOR, 1)[1]), "chat"
        return JID(room_id), "groupchat"

    def _new_message(self, session: Session, room_id: str, body: str,
                     html: str | None = None, msg_id: str | None = None) -> Message:
        """`msg_id`: the id (and XEP-0359 origin-id) to use, when it must be the same on
        every attempt (`origin_id`)."""
        to, kind = self._target(session, room_id)
        msg = session.client.make_message(mto=to, mbody=body, mtype=kind)
        if html:
            msg["html"]["body"] = to_xhtml_im(html)
        msg["id"] = msg_id or secrets.token_hex(12)
        msg["origin_id"]["id"] = msg["id"]
        self.remember_sent(msg["id"])
        return msg

    async def send_message(self, event: MatrixMessage) -> SendResult:
        session = self._session(event.persona_id)
        await session.until_ready()
        if event.attachment is not None:
            return await self._send_file(session, event)
        msg = self._new_message(session, event.room.remote_id, event.text, event.html,
                                origin_id(event.event_id))
        if event.reply_to:
            msg["reply"]["id"] = event.reply_to
            msg["reply"]["to"] = msg["to"]
        return await session.send(msg)

    async def find_sent(self, room: RemoteRoom, event_id: str, since_ms: int
                        ) -> SendResult | None:
        """Look for the message's origin-id in the archive (XEP-0313): the room's own for a
        MUC, the account's for a direct chat. A server without an archive cannot tell: the
        message is sent again."""
        wanted = origin_id(event_id)
        if DM_SEPARATOR in room.remote_id:
            own, contact = room.remote_id.split(DM_SEPARATOR, 1)
            sessions = [s for s in self.sessions.values() if s.jid == JID(own).bare]
            archive, partner = None, JID(contact)
        else:
            sessions = [s for s in self.sessions.values() if room.remote_id in s.rooms]
            archive, partner = JID(room.remote_id), None
        if not sessions:
            raise ConnectionError(f"no XMPP session in {room.remote_id} is open to look up "
                                  "what was sent")
        session = sessions[0]
        await session.until_ready()
        if "xep_0313" not in session.client.plugin:
            session.client.register_plugin("xep_0313")
        start = datetime.fromtimestamp(since_ms / 1000, UTC)
        try:
            async with asyncio.timeout(60):
                async for result in session.client.plugin["xep_0313"].iterate(
                        jid=archive, start=start, with_jid=partner, rsm={"max": 100}):
                    stanza = result["mam_result"]["forwarded"]["stanza"]
                    if wanted in (stanza["origin_id"]["id"], stanza["id"]):
                        return SendResult(wanted)
        except slixmpp.exceptions.IqError as e:
            if e.condition in ("feature-not-implemented", "service-unavailable"):
                log.warning("%s keeps no archive: a message that may have been sent before "
                            "a crash is sent again", archive or JID(session.jid).domain)
                return None
            raise
        return None

    async def _send_file(self, session: Session, event: MatrixMessage) -> SendResult:
        """XEP-0363: upload to the server's HTTP upload service, then share the link."""
        attachment = event.attachment
        assert attachment is not None
        url = await session.client.plugin["xep_0363"].upload_file(
            attachment.name, size=len(attachment.data), content_type=attachment.mimetype,
            input_file=io.BytesIO(attachment.data), domain=JID(session.jid).domain,
            timeout=60)
        msg = self._new_message(session, event.room.remote_id, url,
                                msg_id=origin_id(event.event_id))
        msg["oob"]["url"] = url
        return await session.send(msg)

    def _signal(self, event: MatrixTyping | MatrixRead) -> Message:
        session = self._session(event.persona_id)
        to, kind = self._target(session, event.room.remote_id)
        msg = session.client.make_message(mto=to, mtype=kind)
        msg["id"] = secrets.token_hex(12)
        self.remember_sent(msg["id"])
        return msg

    async def send_typing(self, event: MatrixTyping) -> None:
        msg = self._signal(event)
        msg["chat_state"] = "composing" if event.typing else "active"
        msg.send()

    async def send_read(self, event: MatrixRead) -> None:
        msg = self._signal(event)
        msg["displayed"]["id"] = event.target_id
        msg.send()

    async def send_edit(self, event: MatrixEdit) -> None:
        session = self._session(event.persona_id)
        await session.until_ready()
        msg = self._new_message(session, event.room.remote_id, event.text, event.html)
        msg["replace"]["id"] = event.target_id
        msg.send()

    async def send_redaction(self, event: MatrixRedaction) -> None:
        session = self._session(event.persona_id)
        await session.until_ready()
        to, kind = self._target(session, event.room.remote_id)
        if event.target_is_reaction:
            target, _, _ = event.target_id.partition(":")
            self._send_reactions(session, to, kind, target, set(), "(removed a reaction)")
            return
        msg = session.client.make_message(
            mto=to, mtype=kind,
            mbody="This person retracted a previous message, but your client does not "
                  "support that.")
        msg["id"] = secrets.token_hex(12)
        self.remember_sent(msg["id"])
        msg["retract"]["id"] = event.target_id
        msg["fallback"]["for"] = "urn:xmpp:message-retract:1"
        msg.send()

    async def send_reaction(self, event: MatrixReaction) -> SendResult:
        session = self._session(event.persona_id)
        await session.until_ready()
        to, kind = self._target(session, event.room.remote_id)
        self._send_reactions(session, to, kind, event.target_id, {event.key}, event.key)
        return SendResult(f"{event.target_id}:{session.jid}:{event.key}")

    def _send_reactions(self, session: Session, to: JID, kind: str, target: str,
                        keys: set[str], fallback: str) -> None:
        # A fallback body for clients without reactions, marked (XEP-0428) so clients with
        # them hide it.
        msg = session.client.make_message(mto=to, mtype=kind, mbody=fallback)
        msg["id"] = secrets.token_hex(12)
        self.remember_sent(msg["id"])
        msg["reactions"]["id"] = target
        msg["reactions"]["values"] = keys
        msg["fallback"]["for"] = "urn:xmpp:reactions:0"
        msg.send()
