"""A fake Telegram data centre for the unmodified Telethon: TCP, MTProto 2.0 (mtproto.py), and
the API methods the bridge uses (login, users, dialogs, messages, updates).

Tests drive the other side: people sending messages (`send_as`), scanning a QR login token
(`accept_qr`), refusing sends with FLOOD_WAIT (`flood`), revoking a session (`revoke`),
dropping connections (`drop_connections`).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from telethon.crypto import AuthKey
from telethon.tl import TLRequest, types

from .messages import MessageApi
from .mtproto import Connection, RpcError, ServerKey, tl_vector
from .srp import SrpServer
from .world import Group, Person, StoredFile, new_id, now

log = logging.getLogger("tests.fakes.telegram")
API_ID = 94575
API_HASH = "a3406de8d171bb422bb6ddf3bbd800e2"
CODE_LENGTH = 5


@dataclass
class PendingCode:
    phone: str
    code: str
    expired: bool = False


@dataclass
class Call:
    name: str
    user_id: int | None
    request: Any
    error: str | None = None
    at: float = field(default_factory=time.monotonic)


@dataclass
class QrToken:
    token: bytes
    key_id: int
    accepted_by: int | None = None
    expired: bool = False


@dataclass
class Flood:
    method: str
    seconds: int
    times: int


class FakeTelegram(MessageApi):
    def __init__(self, dc_id: int = 2) -> None:
        self.dc_id = dc_id
        self.rsa_key = ServerKey()
        self.host = "127.0.0.1"
        self.port = 0
        self.auth_keys: dict[int, AuthKey] = {}
        self.authorized: dict[int, int] = {}  # auth key id -> user id
        self.people: dict[int, Person] = {}
        self.groups: dict[int, Group] = {}
        self.files: dict[int, StoredFile] = {}
        self.uploads: dict[int, dict[int, bytes]] = defaultdict(dict)
        self.connections: list[Connection] = []
        self.calls: list[Call] = []
        self.codes: dict[str, PendingCode] = {}  # phone_code_hash -> code
        self.qr_tokens: dict[bytes, QrToken] = {}
        self.floods: list[Flood] = []
        self.srp = SrpServer()
        self.revoked: set[int] = set()  # auth keys whose session the person ended
        self.qr_seconds = 30  # how long a QR login token is good for
        # Connections that lost updates while away get updatesTooLong when they come back.
        self.missed: set[int] = set()
        # Each message's ids, per person who has a copy (private chats and basic groups).
        self.copies: list[dict[int, int]] = []
        self.reads: list[tuple[int, Any, int]] = []
        self._server: asyncio.Server | None = None
        self._other: asyncio.Server | None = None
        self.other_dc = 4
        self.other_port = 0
        self._tasks: set[asyncio.Task[None]] = set()

    # ---- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> FakeTelegram:
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        # A second data centre: people whose account lives there make a QR login move.
        self._other = await asyncio.start_server(
            lambda r, w: self._accept(r, w, self.other_dc), self.host, 0)
        self.other_port = self._other.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: Any) -> None:
        self.drop_connections()
        for listener in (self._server, self._other):
            if listener is not None:
                listener.close()
        for task in list(self._tasks):
            task.cancel()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      dc_id: int | None = None) -> None:
        connection = Connection(self, reader, writer)
        connection.dc_id = dc_id or self.dc_id
        self.connections.append(connection)
        await connection.run()

    def connection_closed(self, connection: Connection) -> None:
        if connection in self.connections:
            self.connections.remove(connection)
        user = self.user_of(connection)
        if user is not None:
            self.missed.add(user)

    def drop_connections(self, user_id: int | None = None) -> None:
        for connection in list(self.connections):
            if user_id is None or self.user_of(connection) == user_id:
                connection.drop()

    @property
    def public_key(self) -> str:
        return self.rsa_key.public_pem

    # ---- people ------------------------------------------------------------------------------

    def add_person(self, first_name: str, phone: str | None = None,
                   username: str | None = None, password: str | None = None) -> Person:
        person = Person(id=new_id(), first_name=first_name,
                        phone=phone or f"4799{secrets.randbelow(10**6):06d}",
                        username=username, password=password)
        self.people[person.id] = person
        return person

    def add_group(self, title: str, members: list[Person], *, channel: bool = False,
                  broadcast: bool = False, forum: bool = False, admins: list[Person] = (),
                  username: str | None = None, reactions: list[str] | None = None) -> Group:
        group = Group(id=new_id(), title=title, members={m.id for m in members},
                      channel=channel or broadcast or forum, broadcast=broadcast, forum=forum,
                      admins={a.id for a in admins}, username=username, reactions=reactions)
        self.groups[group.id] = group
        if forum:
            group.topics[1] = "General"  # General is topic 1, as the forum's first message
            group.next_message_id = 2
        return group

    def user_of(self, connection: Connection) -> int | None:
        return self.authorized.get(connection.auth_key.key_id) if connection.auth_key else None

    def online(self, user_id: int) -> list[Connection]:
        return [c for c in self.connections if self.user_of(c) == user_id]

    def revoke(self, user_id: int) -> None:
        """The person ended the bridge's sessions in their Telegram app (Settings >
        Devices): each request on those auth keys is refused with SESSION_REVOKED."""
        for key_id, owner in list(self.authorized.items()):
            if owner == user_id:
                del self.authorized[key_id]
                self.revoked.add(key_id)

    def flood(self, method: str, seconds: int, times: int = 1) -> None:
        """The next `times` calls of `method` (e.g. "messages.SendMessage") are refused with
        FLOOD_WAIT_<seconds>."""
        self.floods.append(Flood(method, seconds, times))

    def calls_of(self, name: str, since: int = 0) -> list[Call]:
        """The calls of a method, from the `since`-th call on (`len(calls)` earlier: the
        fake serves a whole test module)."""
        return [c for c in self.calls[since:] if c.name == name]

    # ---- QR login from the other side ---------------------------------------------------------

    async def accept_qr(self, token: bytes, person: Person) -> None:
        """The person scans the QR code with their phone ("Link desktop device")."""
        qr = self.qr_tokens[token]
        if qr.expired:
            raise AssertionError("that QR token expired")
        qr.accepted_by = person.id
        for connection in self.connections:
            if connection.auth_key and connection.auth_key.key_id == qr.key_id:
                await connection.send(types.UpdateShort(types.UpdateLoginToken(), now()))

    def expire_qr_tokens(self) -> None:
        for qr in self.qr_tokens.values():
            if qr.accepted_by is None:
                qr.expired = True

    # ---- requests ----------------------------------------------------------------------------

    async def invoke(self, connection: Connection, request: TLRequest) -> Any:
        name = type(request).__module__.rsplit(".", 1)[-1] + "." + type(
            request).__name__.removesuffix("Request")
        user = self.user_of(connection)
        if user is not None and user in self.missed:
            self.missed.discard(user)
            # Updates may have been made while this person was away: as Telegram does, the
            # client is told to catch up (it calls updates.getDifference).
            task = asyncio.create_task(self._too_long(connection))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        call = Call(name, user, request)
        self.calls.append(call)
        try:
            for flood in self.floods:
                if flood.method == name and flood.times > 0:
                    flood.times -= 1
                    raise RpcError(420, f"FLOOD_WAIT_{flood.seconds}")
            handler = getattr(self, "rpc_" + name.replace(".", "_"), None)
            if handler is None:
                raise RpcError(400, f"METHOD_NOT_IN_FAKE_{name.upper()}")
            if not getattr(handler, "anonymous", False) and user is None:
                key_id = connection.auth_key.key_id if connection.auth_key else None
                raise RpcError(401, "SESSION_REVOKED" if key_id in self.revoked
                               else "AUTH_KEY_UNREGISTERED")
            return await handler(connection, request, user)
        except RpcError as e:
            call.error = e.message
            raise

    # ---- connection set-up -------------------------------------------------------------------

    async def rpc_help_GetConfig(self, connection: Connection, request: Any, user: Any) -> Any:
        date = now()
        return types.Config(
            date=date, expires=date.replace(year=date.year + 1), test_mode=False,
            this_dc=self.dc_id,
            dc_options=[types.DcOption(id=self.dc_id, ip_address=self.host, port=self.port),
                        types.DcOption(id=self.other_dc, ip_address=self.host,
                                       port=self.other_port)],
            dc_txt_domain_name="", chat_size_max=200, megagroup_size_max=200000,
            forwarded_count_max=100, online_update_period_ms=210000,
            offline_blur_timeout_ms=5000, offline_idle_timeout_ms=30000,
            online_cloud_timeout_ms=300000, notify_cloud_delay_ms=30000,
            notify_default_delay_ms=1500, push_chat_period_ms=60000, push_chat_limit=2,
            edit_time_limit=172800, revoke_time_limit=2147483647,
            revoke_pm_time_limit=2147483647, rating_e_decay=2419200,
            stickers_recent_limit=200, channels_read_media_period=604800,
            call_receive_timeout_ms=20000, call_ring_timeout_ms=90000,
            call_connect_timeout_ms=30000, call_packet_timeout_ms=10000,
            me_url_prefix="https://t.me/", caption_length_max=1024,
            message_length_max=4096, webfile_dc_id=self.dc_id)
    rpc_help_GetConfig.anonymous = True  # type: ignore[attr-defined]

    async def _too_long(self, connection: Connection) -> None:
        await asyncio.sleep(0.5)
        await connection.send(types.UpdatesTooLong())

    # ---- login -------------------------------------------------------------------------------

    def _authorize(self, connection: Connection, person: Person) -> types.auth.Authorization:
        assert connection.auth_key is not None
        self.authorized[connection.auth_key.key_id] = person.id
        return types.auth.Authorization(user=person.tl(person.id))

    def _check_api(self, api_id: int, api_hash: str) -> None:
        if api_id != API_ID or api_hash != API_HASH:
            raise RpcError(400, "API_ID_INVALID")

    async def rpc_auth_ExportLoginToken(self, connection: Connection, request: Any,
                                        user: Any) -> Any:
        self._check_api(request.api_id, request.api_hash)
        assert connection.auth_key is not None
        for qr in self.qr_tokens.values():
            if qr.key_id == connection.auth_key.key_id and qr.accepted_by is not None:
                person = self.people[qr.accepted_by]
                if person.home_dc != connection.dc_id:
                    # The account lives in another data centre: the login moves there.
                    return types.auth.LoginTokenMigrateTo(dc_id=person.home_dc,
                                                          token=qr.token)
                del self.qr_tokens[qr.token]
                return types.auth.LoginTokenSuccess(self._authorize(connection, person))
        token = secrets.token_bytes(32)
        self.qr_tokens[token] = QrToken(token, connection.auth_key.key_id)
        return types.auth.LoginToken(expires=now() + timedelta(seconds=self.qr_seconds),
                                     token=token)
    rpc_auth_ExportLoginToken.anonymous = True  # type: ignore[attr-defined]

    async def rpc_auth_ImportLoginToken(self, connection: Connection, request: Any,
                                        user: Any) -> Any:
        qr = self.qr_tokens.get(request.token)
        if qr is None or qr.accepted_by is None:
            raise RpcError(400, "AUTH_TOKEN_INVALID")
        person = self.people[qr.accepted_by]
        if person.home_dc != connection.dc_id:
            raise RpcError(400, "AUTH_TOKEN_INVALID")
        del self.qr_tokens[qr.token]
        return types.auth.LoginTokenSuccess(self._authorize(connection, person))
    rpc_auth_ImportLoginToken.anonymous = True  # type: ignore[attr-defined]

    def person_by_phone(self, phone: str) -> Person | None:
        digits = phone.lstrip("+")
        return next((p for p in self.people.values() if p.phone == digits), None)

    async def rpc_auth_SendCode(self, connection: Connection, request: Any, user: Any) -> Any:
        self._check_api(request.api_id, request.api_hash)
        person = self.person_by_phone(request.phone_number)
        if person is None:
            raise RpcError(400, "PHONE_NUMBER_INVALID")
        if person.banned:
            raise RpcError(400, "PHONE_NUMBER_BANNED")
        code_hash = secrets.token_hex(8)
        code = "".join(str(secrets.randbelow(10)) for _ in range(CODE_LENGTH))
        self.codes[code_hash] = PendingCode(person.phone, code)
        return types.auth.SentCode(type=types.auth.SentCodeTypeApp(length=CODE_LENGTH),
                                   phone_code_hash=code_hash)
    rpc_auth_SendCode.anonymous = True  # type: ignore[attr-defined]

    def code_for(self, person: Person) -> str:
        """The login code Telegram sent to the person's other devices."""
        return next(c.code for c in reversed(self.codes.values()) if c.phone == person.phone)

    def expire_codes(self) -> None:
        for code in self.codes.values():
            code.expired = True

    async def rpc_auth_SignIn(self, connection: Connection, request: Any, user: Any) -> Any:
        pending = self.codes.get(request.phone_code_hash)
        if pending is None or pending.phone != request.phone_number.lstrip("+"):
            raise RpcError(400, "PHONE_CODE_EXPIRED")
        if pending.expired:
            raise RpcError(400, "PHONE_CODE_EXPIRED")
        if request.phone_code != pending.code:
            raise RpcError(400, "PHONE_CODE_INVALID")
        person = self.person_by_phone(pending.phone)
        assert person is not None
        del self.codes[request.phone_code_hash]
        if person.password:
            assert connection.auth_key is not None
            self.srp.awaiting[connection.auth_key.key_id] = person.id
            raise RpcError(401, "SESSION_PASSWORD_NEEDED")
        return self._authorize(connection, person)
    rpc_auth_SignIn.anonymous = True  # type: ignore[attr-defined]

    async def rpc_account_GetPassword(self, connection: Connection, request: Any,
                                      user: Any) -> Any:
        assert connection.auth_key is not None
        person_id = self.srp.awaiting.get(connection.auth_key.key_id, user)
        person = self.people.get(person_id) if person_id else None
        if person is None or not person.password:
            return self.srp.no_password()
        return self.srp.challenge(person.id, person.password)
    rpc_account_GetPassword.anonymous = True  # type: ignore[attr-defined]

    async def rpc_auth_CheckPassword(self, connection: Connection, request: Any,
                                     user: Any) -> Any:
        assert connection.auth_key is not None
        person_id = self.srp.awaiting.get(connection.auth_key.key_id)
        if person_id is None:
            raise RpcError(400, "SRP_ID_INVALID")
        if not self.srp.verify(person_id, request.password):
            raise RpcError(400, "PASSWORD_HASH_INVALID")
        del self.srp.awaiting[connection.auth_key.key_id]
        return self._authorize(connection, self.people[person_id])
    rpc_auth_CheckPassword.anonymous = True  # type: ignore[attr-defined]

    async def rpc_auth_LogOut(self, connection: Connection, request: Any, user: Any) -> Any:
        assert connection.auth_key is not None
        self.authorized.pop(connection.auth_key.key_id, None)
        return types.auth.LoggedOut()

    # ---- users -------------------------------------------------------------------------------

    def person_of_input(self, peer: Any, user: int) -> Person:
        if isinstance(peer, types.InputUserSelf | types.InputPeerSelf):
            return self.people[user]
        person = self.people.get(getattr(peer, "user_id", 0))
        if person is None:
            raise RpcError(400, "USER_ID_INVALID")
        return person

    async def rpc_users_GetUsers(self, connection: Connection, request: Any, user: Any
                                 ) -> Any:
        return tl_vector([self.person_of_input(u, user).tl(user) for u in request.id])

    async def rpc_updates_GetState(self, connection: Connection, request: Any, user: Any
                                   ) -> Any:
        person = self.people[user]
        return types.updates.State(pts=person.pts, qts=0, date=now(), seq=0, unread_count=0)

