"""MTProto 2.0, the server's side, over the TcpFull transport: the auth-key exchange with the
fake's own RSA key, encrypted messages, containers, gzip, acks, pings and rpc results.

Everything that is a Telegram type is read and written with Telethon's own TL classes; only
the envelope (auth key id, msg key, msg id, seqno, length) is packed here, as MTProto defines
it around any TL object.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import struct
import time
from collections.abc import Awaitable, Callable
from hashlib import sha1, sha256
from typing import Any
from zlib import crc32

import rsa
from telethon.crypto import AES, AuthKey
from telethon.extensions import BinaryReader
from telethon.helpers import generate_key_data_from_nonce
from telethon.network.mtprotostate import MTProtoState
from telethon.tl import TLObject, TLRequest, functions, types
from telethon.tl.core import GzipPacked, MessageContainer

log = logging.getLogger("tests.fakes.telegram.mtproto")

# The 2048-bit safe prime Telegram's servers use (clients know it, and check any other for
# primality the slow way); g = 3 as they send.
DH_PRIME = int(
    "C71CAEB9C6B1C9048E6C522F70F13F73980D40238E3E21C14934D037563D930F48198A0AA7C14058229493D2"
    "2530F4DBFA336F6E0AC925139543AED44CCE7C3720FD51F69458705AC68CD4FE6B6B13ABDC9746512969328"
    "454F18FAF8C595F642477FE96BB2A941D5BCD1D4AC8CC49880708FA9B378E3C4F3A9060BEE67CF9A4A4A695"
    "811051907E162753B56B0F6B410DBA74D8A84B2A14B3144E0EF1284754FD17ED950D5965B4B9DD46582DB11"
    "78D169C6BC465B0D6FF9CA3928FEF5B9AE4E418FC15E83EBEA0F87FA9FF5EED70050DED2849F47BF959D956"
    "850CE929851F0D8115F635B105EE2E4E15D04B2454BF6F4FADF034B10403119CD8E3B92FCC5B", 16)
DH_G = 3
RPC_RESULT = 0xF35C6D01
VECTOR = 0x1CB5C415


def tl_vector(items: list[Any]) -> bytes:
    """A bare `Vector<T>` result (users.getUsers answers one): its count, then each object."""
    return struct.pack("<Ii", VECTOR, len(items)) + b"".join(bytes(i) for i in items)


class RpcError(Exception):
    """Raised by a handler: the request is answered with rpc_error(code, message)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ServerKey:
    """The fake's RSA key pair; Telethon is told to trust its public half (`rsa.add_key`)."""

    def __init__(self) -> None:
        self.public, self.private = rsa.newkeys(2048)

    @property
    def public_pem(self) -> str:
        return self.public.save_pkcs1().decode()

    @property
    def fingerprint(self) -> int:
        n = TLObject.serialize_bytes(_int_bytes(self.public.n))
        e = TLObject.serialize_bytes(_int_bytes(self.public.e))
        return struct.unpack("<q", sha1(n + e).digest()[-8:])[0]

    def decrypt(self, data: bytes) -> bytes:
        # Telethon's encryption: RSA without padding over sha1(data) + data + random padding.
        value = pow(int.from_bytes(data, "big"), self.private.d, self.private.n)
        return value.to_bytes(255, "big")


def _int_bytes(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


Handler = Callable[["Connection", TLRequest], Awaitable[Any]]


class Connection:
    """One client TCP connection: handshake (plain messages) and then encrypted traffic."""

    def __init__(self, server: Any, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.auth_key: AuthKey | None = None
        self.dc_id = 0  # the data centre this connection reached
        self.session_id = 0
        self.salt = 0
        self._send_counter = 0
        self._last_msg_id = 0
        self._dh: dict[str, Any] = {}
        self.closed = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    # ---- TcpFull framing ---------------------------------------------------------------------

    async def _read_packet(self) -> bytes:
        head = await self.reader.readexactly(8)
        length, _seq = struct.unpack("<ii", head)
        rest = await self.reader.readexactly(length - 8)
        body, checksum = rest[:-4], struct.unpack("<I", rest[-4:])[0]
        if crc32(head + body) != checksum:
            raise ConnectionError("bad TcpFull checksum")
        return body

    def _write_packet(self, data: bytes) -> None:
        packet = struct.pack("<ii", len(data) + 12, self._send_counter) + data
        self._send_counter += 1
        self.writer.write(packet + struct.pack("<I", crc32(packet)))

    def _new_msg_id(self) -> int:
        # Server message ids are odd (1 mod 4 for answers is what servers do; odd suffices).
        msg_id = (int(time.time() * 2**32) & ~3) | 1
        if msg_id <= self._last_msg_id:
            msg_id = self._last_msg_id + 4
        self._last_msg_id = msg_id
        return msg_id

    # ---- the loop ----------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            while True:
                packet = await self._read_packet()
                if packet[:8] == b"\0" * 8:
                    await self._plain(packet)
                else:
                    await self._encrypted(packet)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.closed.set()
            self.server.connection_closed(self)
            for task in self._tasks:
                task.cancel()
            self.writer.close()

    def drop(self) -> None:
        """Cut the TCP connection (a network failure, as the client sees it)."""
        self.writer.transport.abort()

    # ---- the auth-key exchange ---------------------------------------------------------------

    async def _plain(self, packet: bytes) -> None:
        with BinaryReader(packet[20:]) as reader:
            request = reader.tgread_object()
        answer = self._handshake(request)
        body = bytes(answer)
        self._write_packet(struct.pack("<qqi", 0, self._new_msg_id(), len(body)) + body)
        await self.writer.drain()

    def _handshake(self, request: Any) -> TLObject:
        key: ServerKey = self.server.rsa_key
        if isinstance(request, functions.ReqPqMultiRequest):
            p, q = 1_000_000_007, 998_244_353
            self._dh = {"nonce": request.nonce,
                        "server_nonce": int.from_bytes(os.urandom(16), "big", signed=True),
                        "pq": p * q}
            return types.ResPQ(nonce=request.nonce, server_nonce=self._dh["server_nonce"],
                               pq=_int_bytes(p * q),
                               server_public_key_fingerprints=[key.fingerprint])
        if isinstance(request, functions.ReqDHParamsRequest):
            plain = key.decrypt(request.encrypted_data)
            data = plain[20:]
            with BinaryReader(data) as reader:
                inner = reader.tgread_object()
            assert isinstance(inner, types.PQInnerData), inner
            if sha1(bytes(inner)).digest() != plain[:20] or inner.nonce != self._dh["nonce"]:
                raise ConnectionError("bad p_q_inner_data")
            a = int.from_bytes(os.urandom(256), "big") % DH_PRIME
            self._dh.update(new_nonce=inner.new_nonce, a=a)
            answer = bytes(types.ServerDHInnerData(
                nonce=inner.nonce, server_nonce=inner.server_nonce, g=DH_G,
                dh_prime=_int_bytes(DH_PRIME), g_a=_int_bytes(pow(DH_G, a, DH_PRIME)),
                server_time=int(time.time())))
            hashed = sha1(answer).digest() + answer
            hashed += os.urandom(-len(hashed) % 16)
            aes_key, aes_iv = generate_key_data_from_nonce(inner.server_nonce, inner.new_nonce)
            return types.ServerDHParamsOk(nonce=inner.nonce, server_nonce=inner.server_nonce,
                                          encrypted_answer=AES.encrypt_ige(hashed, aes_key,
                                                                           aes_iv))
        if isinstance(request, functions.SetClientDHParamsRequest):
            aes_key, aes_iv = generate_key_data_from_nonce(self._dh["server_nonce"],
                                                           self._dh["new_nonce"])
            plain = AES.decrypt_ige(request.encrypted_data, aes_key, aes_iv)
            with BinaryReader(plain[20:]) as reader:
                inner = reader.tgread_object()
            assert isinstance(inner, types.ClientDHInnerData), inner
            g_b = int.from_bytes(inner.g_b, "big")
            auth_key = AuthKey(_int_bytes(pow(g_b, self._dh["a"], DH_PRIME)))
            self.server.auth_keys[auth_key.key_id] = auth_key
            return types.DhGenOk(nonce=inner.nonce, server_nonce=inner.server_nonce,
                                 new_nonce_hash1=auth_key.calc_new_nonce_hash(
                                     self._dh["new_nonce"], 1))
        raise ConnectionError(f"unexpected plain message {type(request).__name__}")

    # ---- encrypted messages ------------------------------------------------------------------

    async def _encrypted(self, packet: bytes) -> None:
        key_id = struct.unpack("<Q", packet[:8])[0]
        auth_key = self.server.auth_keys.get(key_id)
        if auth_key is None:
            # What Telegram does for an unknown key: transport error -404, then close.
            self.writer.write(struct.pack("<iii", 12, self._send_counter, -404)
                              + struct.pack("<I", 0))
            raise ConnectionError("unknown auth key")
        msg_key = packet[8:24]
        aes_key, aes_iv = MTProtoState._calc_key(auth_key.key, msg_key, True)
        plain = AES.decrypt_ige(packet[24:], aes_key, aes_iv)
        if sha256(auth_key.key[88:120] + plain).digest()[8:24] != msg_key:
            raise ConnectionError("bad msg_key")
        self.auth_key = auth_key
        salt, session_id, msg_id, _seq, length = struct.unpack("<qqqii", plain[:32])
        if session_id != self.session_id:
            self.session_id = session_id
        self.salt = salt
        with BinaryReader(plain[32:32 + length]) as reader:
            obj = reader.tgread_object()
        await self._dispatch(msg_id, obj)

    async def _dispatch(self, msg_id: int, obj: Any) -> None:
        if isinstance(obj, MessageContainer):
            for message in obj.messages:
                await self._dispatch(message.msg_id, message.obj)
            return
        if isinstance(obj, GzipPacked):
            with BinaryReader(obj.data) as reader:
                await self._dispatch(msg_id, reader.tgread_object())
            return
        if isinstance(obj, types.MsgsAck):
            return
        if isinstance(obj, functions.PingRequest | functions.PingDelayDisconnectRequest):
            await self.send(types.Pong(msg_id=msg_id, ping_id=obj.ping_id), False)
            return
        if isinstance(obj, functions.DestroySessionRequest):
            await self.send(types.DestroySessionOk(obj.session_id), False)
            return
        if not isinstance(obj, TLRequest):
            log.debug("ignored %s", type(obj).__name__)
            return
        await self.send(types.MsgsAck([msg_id]), False)
        # Each request runs on its own: a slow one (a QR wait) must not block pings.
        task = asyncio.create_task(self._answer(msg_id, obj))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, msg_id: int, request: TLRequest) -> None:
        try:
            result = await self.server.invoke(self, _unwrap(request))
            body = result if isinstance(result, bytes) else bytes(result)
        except RpcError as e:
            body = bytes(types.RpcError(e.code, e.message))
        except Exception:
            log.exception("fake Telegram failed on %s", type(request).__name__)
            body = bytes(types.RpcError(500, "INTERNAL"))
        await self.send_raw(struct.pack("<Iq", RPC_RESULT, msg_id) + body, True)

    async def send(self, obj: TLObject, content_related: bool = True) -> None:
        await self.send_raw(bytes(obj), content_related)

    async def send_raw(self, body: bytes, content_related: bool) -> None:
        if self.auth_key is None or self.writer.is_closing():
            return
        if content_related and len(body) > 512:
            body = bytes(GzipPacked(body))
        seq = 1 if content_related else 0
        data = struct.pack("<qqqii", self.salt, self.session_id, self._new_msg_id(), seq,
                           len(body)) + body
        padding = secrets.token_bytes(-(len(data) + 12) % 16 + 12)
        msg_key = sha256(self.auth_key.key[96:128] + data + padding).digest()[8:24]
        aes_key, aes_iv = MTProtoState._calc_key(self.auth_key.key, msg_key, False)
        self._write_packet(struct.pack("<Q", self.auth_key.key_id) + msg_key
                           + AES.encrypt_ige(data + padding, aes_key, aes_iv))
        try:
            await self.writer.drain()
        except ConnectionError:
            pass


def _unwrap(request: TLRequest) -> TLRequest:
    """invokeWithLayer(initConnection(query)) and friends carry the real request."""
    while isinstance(request, functions.InvokeWithLayerRequest | functions.InitConnectionRequest
                     | functions.InvokeWithoutUpdatesRequest
                     | functions.InvokeAfterMsgRequest):
        request = request.query
    return request
