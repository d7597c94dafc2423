"""The Telegram network: each linked person's own MTProto session (Telethon), linked by QR
code or phone code (+ cloud password), sealed in the vault as a session string.

Sending as the person: text with entities, replies, forum topics (threads), edits, deletes,
reactions, files. Telegram's refusals become what the core understands: FLOOD_WAIT_X is
`RateLimited(X)` for the delivery queue (nothing here sleeps), a revoked or logged-out
session is `CredentialsRejected` (read-only until relinked).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from ..base import (
    BridgeSink,
    Connector,
    ConnectorState,
    CredentialsRejected,
    MatrixEdit,
    MatrixMessage,
    MatrixReaction,
    MatrixRead,
    MatrixRedaction,
    MatrixTyping,
    RateLimited,
    RemoteMessage,
    RemoteRoom,
    RemoteUser,
    SendResult,
    Unsupported,
)
from ..history import HistoryCursor, HistoryPage
from ..lazy import lazy
from ..login import LinkedAccount, LoginFailed, LoginStep
from .client import error_name, make_client, session_gone
from .events import TelegramEvents, display_name, private_room_id
from .formatting import from_matrix, to_input_entities
from .login import TelegramLogin
from .update_state import UpdateState

if TYPE_CHECKING:
    from telethon import TelegramClient, errors, events, utils
    from telethon.tl import functions, types

    from .history import TelegramHistory
else:
    # Telethon is imported when the first session opens or the first login starts.
    errors, events, utils = lazy("telethon.errors"), lazy("telethon.events"), lazy(
        "telethon.utils")
    functions, types = lazy("telethon.tl.functions"), lazy("telethon.tl.types")

log = logging.getLogger("relayforge.telegram")
T = TypeVar("T")
REMEMBERED = 20_000


class TgSession:
    """A person's live Telegram session, and what it needs to tell its own actions apart."""

    def __init__(self, persona_id: str, user_id: int, owner: str, client: TelegramClient
                 ) -> None:
        self.persona_id = persona_id
        self.user_id = user_id
        self.owner = owner
        self.client = client
        self.rejected: str | None = None
        self.dialogs_loaded = False
        # What the bridge itself did (its echoes must not come back), per chat.
        self._done: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._locks: dict[str, asyncio.Lock] = {}
        # Private chats and basic groups: deletions name only the message id.
        self._rooms: OrderedDict[int, str] = OrderedDict()
        self._authors: OrderedDict[tuple[str, int], str] = OrderedDict()
        self.reactions: dict[tuple[str, int], dict[str, str]] = {}
        self.topics_seen: set[tuple[str, int]] = set()
        self.topic_titles: dict[tuple[str, int], str] = {}
        self.avatars: dict[int, Any] = {}  # profile photo id -> Attachment (or None)

    def lock(self, room: str) -> asyncio.Lock:
        return self._locks.setdefault(room, asyncio.Lock())

    def did(self, room: str, what: str) -> None:
        self._done[(room, what)] = None
        while len(self._done) > REMEMBERED:
            self._done.popitem(last=False)

    def _done_by_bridge(self, room: str, what: str) -> bool:
        return (room, what) in self._done

    async def sent_by_bridge(self, room: str, msg_id: int) -> bool:
        # A send in flight records its id when Telegram answers: wait for it.
        async with self.lock(room):
            return self._done_by_bridge(room, f"msg:{msg_id}")

    def edited_by_bridge(self, room: str, msg_id: int) -> bool:
        return self._done_by_bridge(room, f"edit:{msg_id}")

    def deleted_by_bridge(self, room: str, msg_id: int) -> bool:
        return self._done_by_bridge(room, f"delete:{msg_id}")

    def reacted_by_bridge(self, room: str, key: str) -> bool:
        return self._done_by_bridge(room, f"react:{key}")

    def remember(self, msg_id: int, room: str, author: str) -> None:
        self._rooms[msg_id] = room
        self._authors[(room, msg_id)] = author
        while len(self._rooms) > REMEMBERED:
            self._rooms.popitem(last=False)
        while len(self._authors) > REMEMBERED:
            self._authors.popitem(last=False)

    def room_of(self, msg_id: int) -> str | None:
        return self._rooms.get(msg_id)

    def author_of(self, room: str, msg_id: int) -> str:
        """Telegram does not say who deleted a message; it is gone for this person, so the
        deletion counts as its author's (the only one whose deletions the core applies)."""
        return self._authors.get((room, msg_id), "")


class TelegramConnector(Connector):
    network = "telegram"
    login_in_process = True  # the login's client (its new auth key) waits in memory

    def __init__(self, settings: Mapping[str, Any] | None = None) -> None:
        super().__init__(settings)
        self.sessions: dict[str, TgSession] = {}
        self.sink: BridgeSink | None = None
        self.login = TelegramLogin(self.settings)
        self.events = TelegramEvents(self)
        self._history: TelegramHistory | None = None
        self.update_state = UpdateState(lambda: self.sink)

    @property
    def history(self) -> TelegramHistory:
        # Its module imports Telethon: made when history is first read.
        if self._history is None:
            from .history import TelegramHistory

            self._history = TelegramHistory(self)
        return self._history

    # ---- lifecycle ---------------------------------------------------------------------------

    async def start(self, sink: BridgeSink) -> None:
        self.sink = sink
        self.state = ConnectorState.CONNECTED

    async def stop(self) -> None:
        await self.login.close()
        for persona_id in list(self.sessions):
            await self.close_session(persona_id)
        self.state = ConnectorState.STOPPED

    def ghost_of(self, user_id: int) -> str:
        assert self.sink is not None
        return self.sink.ghost_mxid(str(user_id))

    # ---- linking -----------------------------------------------------------------------------

    def login_flows(self) -> list[str]:
        return ["qr", "phone"]

    def describe_scopes(self, scopes: list[str]) -> list[str]:
        return ["a Telegram session of your own (like a desktop app): your chats, as you"
                if s == "mtproto" else s for s in scopes]

    async def begin_login(self, identifier: str | None) -> LoginStep:
        return await self.login.begin(identifier)

    async def continue_login(self, state: dict[str, Any], answers: dict[str, str]
                             ) -> LoginStep | LinkedAccount:
        return await self.login.next(state, answers)

    def _client_for(self, credentials: Mapping[str, str], catch_up: bool = False
                    ) -> TelegramClient:
        api_id = int(credentials["api_id"]) if credentials.get("api_id") else None
        return make_client(self.settings, credentials["session"], api_id=api_id,
                           api_hash=credentials.get("api_hash"), catch_up=catch_up)

    async def revoke_access(self, external_user_id: str, credentials: dict[str, str]) -> bool:
        """`revoke`/`unlink`: end the session at Telegram (auth.logOut) first."""
        client = self._client_for(credentials)
        try:
            await client.connect()
            return bool(await client.log_out())
        except (errors.RPCError, ConnectionError, OSError) as e:
            log.info("auth.logOut for Telegram user %s: %s", external_user_id, e)
            return False
        finally:
            await client.disconnect()

    async def discard_login(self, credentials: dict[str, str]) -> None:
        """Consent refused: the new session must not stay among the person's devices."""
        await self.revoke_access("(not linked)", credentials)

    # ---- sessions ----------------------------------------------------------------------------

    async def open_session(self, persona_id: str, external_user_id: str,
                           credentials: dict[str, str], owner: str) -> None:
        await self.close_session(persona_id)
        client = self._client_for(credentials, catch_up=True)
        session = TgSession(persona_id, int(external_user_id), owner, client)
        self.sessions[persona_id] = session
        await self.update_state.restore(session)
        self.events.register(session)
        # Registered last: an update counts as handled once the handlers above ran.
        client.add_event_handler(lambda _: self.update_state.record(session), events.Raw())
        try:
            await asyncio.wait_for(client.connect(), 30)
            if not await client.is_user_authorized():
                session.rejected = "Telegram ended this session (logged out or revoked)"
                await self.report_auth_failure(persona_id, session.rejected)
                return
            # Fills Telethon's entity cache (access hashes) for the chats the person has.
            await client.get_dialogs()
            session.dialogs_loaded = True
        except errors.FloodWaitError as e:
            # Never a crash loop at start: the chats are fetched when first needed.
            log.warning("Telegram asks %s to wait %s s before listing chats; later then",
                        external_user_id, e.seconds)
        except (TimeoutError, ConnectionError, OSError) as e:
            log.warning("Telegram session of %s is not up yet (%s); it keeps trying",
                        external_user_id, e)
        except session_gone() as e:
            session.rejected = f"Telegram ended this session ({error_name(e)})"
            await self.report_auth_failure(persona_id, session.rejected)

    async def close_session(self, persona_id: str) -> None:
        session = self.sessions.pop(persona_id, None)
        if session is not None:
            await self.update_state.record(session)
            with contextlib.suppress(Exception):
                await session.client.disconnect()

    def session_for(self, persona_id: str | None) -> TgSession:
        session = self.sessions.get(persona_id or "")
        if session is None:
            raise ConnectionError("this Telegram account's session is not open")
        return session

    async def call(self, session: TgSession, action: Callable[[], Awaitable[T]],
                   what: str) -> T:
        """One request as the person; Telegram's refusals as the core understands them."""
        if session.rejected:
            raise CredentialsRejected(session.rejected, reported=True)
        try:
            return await action()
        except errors.FloodWaitError as e:
            raise RateLimited(float(e.seconds), f"Telegram FLOOD_WAIT_{e.seconds} on {what}"
                              ) from e
        except errors.SlowModeWaitError as e:
            raise RateLimited(float(e.seconds), f"Telegram slow mode on {what}") from e
        except session_gone() as e:
            session.rejected = f"Telegram refused the session ({error_name(e)})"
            raise await self.credentials_rejected(session.persona_id, session.rejected) from e
        except (errors.ChatWriteForbiddenError, errors.ChatAdminRequiredError,
                errors.ChatSendPlainForbiddenError, errors.ChatSendMediaForbiddenError) as e:
            raise Unsupported(f"you may not post in this Telegram chat ({error_name(e)})"
                              ) from e
        except errors.MessageAuthorRequiredError as e:
            raise Unsupported("only the author can change this Telegram message") from e

    # ---- rooms -------------------------------------------------------------------------------

    async def _peer(self, session: TgSession, remote_room_id: str) -> Any:
        """The input peer of a portal's chat (its access hash from Telethon's cache, filled
        from the person's chat list)."""
        if ":" in remote_room_id:
            own, _, other = remote_room_id.partition(":")
            if int(own) != session.user_id:
                raise ConnectionError(f"{remote_room_id} is another account's private chat")
            peer: Any = types.PeerUser(int(other))
        else:
            peer = int(remote_room_id)
        try:
            return await session.client.get_input_entity(peer)
        except ValueError:
            if session.dialogs_loaded:
                raise
        await self.call(session, session.client.get_dialogs, "listing chats")
        session.dialogs_loaded = True
        return await session.client.get_input_entity(peer)

    async def join(self, persona_id: str, remote_room_id: str,
                   since_ms: int | None = None) -> RemoteRoom:
        """`map telegram @username`, a chat id (-123, -100123) or a t.me link: a chat the
        person is in. What it said since `since_ms` is caught up."""
        session = self.session_for(persona_id)
        wanted = remote_room_id.strip()
        for prefix in ("https://t.me/", "http://t.me/", "t.me/"):
            if wanted.startswith(prefix):
                wanted = "@" + wanted.removeprefix(prefix).strip("/")
        try:
            if wanted.startswith("@+") or "joinchat/" in wanted:
                raise LoginFailed("invite links are not supported yet: join the chat in "
                                  "Telegram, then map it by @username or id")
            target: Any = int(wanted) if wanted.lstrip("-").isdigit() else wanted
            entity = await self.call(session, lambda: session.client.get_entity(target),
                                     "resolving the chat")
        except (ValueError, errors.UsernameNotOccupiedError,
                errors.UsernameInvalidError) as e:
            raise LoginFailed(f"there is no Telegram chat {remote_room_id} you can see") from e
        if isinstance(entity, types.User):
            room = RemoteRoom(private_room_id(session.user_id, entity.id),
                              name=display_name(entity), direct=True)
        else:
            room = RemoteRoom(str(utils.get_peer_id(entity)), name=display_name(entity))
        # Mapped now: the topics' roots go to the new portal with their first messages.
        session.topics_seen = {seen for seen in session.topics_seen
                               if seen[0] != room.remote_id}
        if since_ms:
            await self._catch_up(session, entity, room, since_ms)
        return room

    async def _catch_up(self, session: TgSession, entity: Any, room: RemoteRoom,
                        since_ms: int) -> None:
        """After a restart: the chat's messages since the last one bridged, oldest first
        (the core drops those it has already)."""
        since = datetime.fromtimestamp(since_ms / 1000, UTC)
        missed = []
        async for message in session.client.iter_messages(entity, limit=200):
            if message.date < since:
                break
            missed.append(message)
        for message in reversed(missed):
            if isinstance(message, types.Message):
                await self.events.on_history(session, message)

    async def fetch_history(self, persona_id: str, room: RemoteRoom, *,
                            after: HistoryCursor | None, not_before_ms: int | None,
                            limit: int) -> HistoryPage:
        """The chat's past as the person reads it, for backfill and catching up."""
        return await self.history.fetch(persona_id, room, after=after,
                                        not_before_ms=not_before_ms, limit=limit)

    async def topic_root(self, session: TgSession, room: RemoteRoom, peer: Any, topic: int,
                         title: str | None = None) -> None:
        """A forum topic just created only has its name noted (the group may not be mapped
        yet); its root is sent before its first message that reaches Matrix."""
        if title is not None:
            session.topic_titles[(room.remote_id, topic)] = title
            return
        assert self.sink is not None
        for event in await self.topic_root_events(session, room, peer, topic):
            await self.sink.handle_remote_event(event)

    async def topic_root_events(self, session: TgSession, room: RemoteRoom, peer: Any,
                                topic: int, timestamp_ms: int | None = None
                                ) -> list[RemoteMessage]:
        """A forum topic is a Matrix thread whose first event names the topic: the root,
        once per topic and portal."""
        if (room.remote_id, topic) in session.topics_seen:
            return []
        session.topics_seen.add((room.remote_id, topic))
        title = session.topic_titles.get((room.remote_id, topic)) or await self._topic_title(
            session, peer, topic)
        entity = await self.events.user(session, peer)
        return [RemoteMessage(
            room=room, sender=RemoteUser(entity.remote_id, display_name=entity.display_name),
            receiver=session.owner, persona_id=session.persona_id, message_id=str(topic),
            timestamp_ms=timestamp_ms,
            text=f"Topic: {title}", html=f"<strong>Topic: {title}</strong>")]

    async def _topic_title(self, session: TgSession, peer: Any, topic: int) -> str:
        try:
            result = await session.client(functions.messages.GetForumTopicsRequest(
                peer=await session.client.get_input_entity(peer), offset_date=None,
                offset_id=0, offset_topic=0, limit=100))
        except errors.RPCError:
            return f"#{topic}"
        return next((t.title for t in result.topics if t.id == topic), f"#{topic}")

    # ---- Matrix -> Telegram ------------------------------------------------------------------

    async def _text(self, session: TgSession, text: str, html: str | None
                    ) -> tuple[str, list[Any]]:
        assert self.sink is not None
        pills: dict[str, int] = {}
        if html:
            for mxid in re.findall(r'href="https://matrix\.to/#/(@[^"?]+)', html):
                remote = await self.sink.remote_user_for(mxid)
                if remote and remote.isdigit():
                    pills[mxid] = int(remote)
        message, entities = from_matrix(text, html, pills.get)
        resolved = {}
        for user_id in set(pills.values()):
            with contextlib.suppress(ValueError, TypeError):
                resolved[user_id] = utils.get_input_user(
                    await session.client.get_input_entity(types.PeerUser(user_id)))
        entities = [e for e in entities
                    if not isinstance(e, types.InputMessageEntityMentionName)
                    or e.user_id in resolved]
        return message, to_input_entities(entities, resolved.__getitem__)

    @staticmethod
    def _reply_to(event: MatrixMessage) -> types.InputReplyToMessage | None:
        topic = int(event.thread_root) if event.thread_root else None
        reply = int(event.reply_to) if event.reply_to else None
        if topic and reply and reply != topic:
            return types.InputReplyToMessage(reply_to_msg_id=reply, top_msg_id=topic)
        if topic or reply:
            return types.InputReplyToMessage(reply_to_msg_id=(reply or topic))  # type: ignore
        return None

    async def send_message(self, event: MatrixMessage) -> SendResult:
        session = self.session_for(event.persona_id)
        room = event.room.remote_id
        peer = await self._peer(session, room)
        text, entities = await self._text(session, event.text, event.html)
        random_id = secrets.randbits(63)
        reply_to = self._reply_to(event)
        async with session.lock(room):
            if event.attachment is not None:
                attachment = event.attachment
                upload = await self.call(session, lambda: session.client.upload_file(
                    attachment.data, file_name=attachment.name), "uploading a file")
                media: Any
                if attachment.mimetype in ("image/jpeg", "image/png"):
                    media = types.InputMediaUploadedPhoto(file=upload)
                else:
                    media = types.InputMediaUploadedDocument(
                        file=upload, mime_type=attachment.mimetype,
                        attributes=[types.DocumentAttributeFilename(attachment.name)])
                caption = "" if text == attachment.name else text
                request: Any = functions.messages.SendMediaRequest(
                    peer=peer, media=media, message=caption, random_id=random_id,
                    reply_to=reply_to, entities=entities if caption else None)
            else:
                request = functions.messages.SendMessageRequest(
                    peer=peer, message=text, random_id=random_id, reply_to=reply_to,
                    entities=entities or None)
            result = await self.call(session, lambda: session.client(request),
                                     "sending a message")
            msg_id = _sent_id(result, random_id)
            session.did(room, f"msg:{msg_id}")
            session.remember(msg_id, room, str(session.user_id))
        return SendResult(str(msg_id))

    async def send_edit(self, event: MatrixEdit) -> None:
        session = self.session_for(event.persona_id)
        room = event.room.remote_id
        peer = await self._peer(session, room)
        text, entities = await self._text(session, event.text, event.html)
        session.did(room, f"edit:{event.target_id}")
        await self.call(session, lambda: session.client(functions.messages.EditMessageRequest(
            peer=peer, id=int(event.target_id), message=text, entities=entities or None)),
            "editing a message")

    async def send_redaction(self, event: MatrixRedaction) -> None:
        session = self.session_for(event.persona_id)
        room = event.room.remote_id
        peer = await self._peer(session, room)
        if event.target_is_reaction:
            msg_id, _, key = event.target_id.partition(":")
            session.did(room, f"react:-{event.target_id}")
            await self.call(session, lambda: session.client(
                functions.messages.SendReactionRequest(peer=peer, msg_id=int(msg_id),
                                                       reaction=[])), "removing a reaction")
            del key
            return
        session.did(room, f"delete:{event.target_id}")
        await self.call(session, lambda: session.client.delete_messages(
            peer, [int(event.target_id)], revoke=True), "deleting a message")

    async def send_reaction(self, event: MatrixReaction) -> SendResult:
        session = self.session_for(event.persona_id)
        room = event.room.remote_id
        peer = await self._peer(session, room)
        key = event.key.replace("\ufe0f", "") if event.key.endswith("\ufe0f") else event.key
        reaction_id = f"{event.target_id}:{session.user_id}:{key}"
        session.did(room, f"react:{reaction_id}")
        try:
            await self.call(session, lambda: session.client(
                functions.messages.SendReactionRequest(
                    peer=peer, msg_id=int(event.target_id),
                    reaction=[types.ReactionEmoji(emoticon=key)])), "reacting")
        except (errors.ReactionInvalidError, errors.ReactionEmptyError) as e:
            raise Unsupported(f"this Telegram chat does not allow the reaction {key}") from e
        return SendResult(reaction_id)

    async def send_typing(self, event: MatrixTyping) -> None:
        session = self.session_for(event.persona_id)
        peer = await self._peer(session, event.room.remote_id)
        action = (types.SendMessageTypingAction() if event.typing
                  else types.SendMessageCancelAction())
        await self.call(session, lambda: session.client(functions.messages.SetTypingRequest(
            peer=peer, action=action)), "typing")

    async def send_read(self, event: MatrixRead) -> None:
        session = self.session_for(event.persona_id)
        peer = await self._peer(session, event.room.remote_id)
        await self.call(session, lambda: session.client.send_read_acknowledge(
            peer, max_id=int(event.target_id)), "marking as read")


def _sent_id(result: Any, random_id: int) -> int:
    """The id Telegram gave a message just sent (UpdateMessageID names our random_id)."""
    if isinstance(result, types.UpdateShortSentMessage):
        return result.id
    for update in getattr(result, "updates", []):
        if isinstance(update, types.UpdateMessageID) and update.random_id == random_id:
            return update.id
    for update in getattr(result, "updates", []):
        if isinstance(update, types.UpdateNewMessage | types.UpdateNewChannelMessage):
            return update.message.id
    raise ConnectionError("Telegram's answer to a send named no message")
