"""A person's encrypting Matrix client for tests, on a crypto stack independent of the
bridge's: vodozemac (Rust) for Olm and Megolm, the protocol's JSON written out here, and the
real client-server API of the test Synapse (mautrix only carries the HTTP requests)."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
from collections.abc import Callable
from typing import Any

import vodozemac as vz
from mautrix.api import Method, Path
from mautrix.client import ClientAPI
from mautrix.types import RoomCreatePreset, RoomID, UserID

from bridge.sandbox.synapse import LocalSynapse

from .matrix import DEADLINE

OLM = "m.olm.v1.curve25519-aes-sha2"
MEGOLM = "m.megolm.v1.aes-sha2"


def canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


class E2eeDevice:
    """One device of a person: its Olm account, its sessions and a /sync loop."""

    def __init__(self, client: ClientAPI, device_id: str) -> None:
        self.client = client
        self.mxid: UserID = client.mxid
        self.device_id = device_id
        self.account = vz.Account()
        self.olm: dict[str, list[vz.Session]] = {}  # by the other device's curve25519 key
        self.outbound: dict[RoomID, vz.GroupSession] = {}
        self.inbound: dict[str, vz.InboundGroupSession] = {}
        self._first_keys: dict[str, str] = {}
        self.timeline: dict[RoomID, list[dict]] = {}
        self.to_device: list[dict] = []  # decrypted (or plain) to-device events, in order
        # Answers m.room_key_request from others: None ignores it.
        self.on_key_request: Callable[[dict], Any] | None = None
        self._since: str | None = None
        self._sync: asyncio.Task | None = None
        self._changed = asyncio.Event()

    # ---- set-up ---------------------------------------------------------------------------

    @classmethod
    async def login(cls, synapse: LocalSynapse, username: str, password: str) -> E2eeDevice:
        api = ClientAPI(base_url=synapse.url)
        response = await api.api.request(Method.POST, Path.v3.login, {
            "type": "m.login.password", "identifier": {"type": "m.id.user", "user": username},
            "password": password, "initial_device_display_name": "test device"})
        client = ClientAPI(UserID(response["user_id"]), base_url=synapse.url,
                           token=response["access_token"])
        await api.api.session.close()
        device = cls(client, response["device_id"])
        await device.upload_keys()
        device._sync = asyncio.create_task(device._sync_loop())
        await device.wait(lambda: device._since is not None)
        return device

    async def close(self) -> None:
        if self._sync:
            self._sync.cancel()
        await self.client.api.session.close()

    @property
    def curve(self) -> str:
        return self.account.curve25519_key.to_base64()

    @property
    def ed(self) -> str:
        return self.account.ed25519_key.to_base64()

    def _signed(self, obj: dict) -> dict:
        signature = self.account.sign(canonical(obj)).to_base64()
        return {**obj, "signatures": {self.mxid: {f"ed25519:{self.device_id}": signature}}}

    async def upload_keys(self, count: int = 10) -> None:
        device_keys = self._signed({
            "user_id": self.mxid, "device_id": self.device_id, "algorithms": [OLM, MEGOLM],
            "keys": {f"curve25519:{self.device_id}": self.curve,
                     f"ed25519:{self.device_id}": self.ed}})
        self.account.generate_one_time_keys(count)
        otks = {f"signed_curve25519:{key_id}": self._signed({"key": key.to_base64()})
                for key_id, key in self.account.one_time_keys.items()}
        await self.client.api.request(Method.POST, Path.v3.keys.upload,
                                      {"device_keys": device_keys, "one_time_keys": otks})
        self.account.mark_keys_as_published()

    # ---- what the server lists ------------------------------------------------------------

    async def devices_of(self, user: UserID) -> dict[str, dict]:
        """Device keys the server lists for a user, each checked against its own signature."""
        response = await self.client.api.request(Method.POST, Path.v3.keys.query,
                                                 {"device_keys": {user: []}})
        devices = response.get("device_keys", {}).get(user, {})
        for device_id, keys in devices.items():
            unsigned = {k: v for k, v in keys.items() if k not in ("signatures", "unsigned")}
            signature = keys["signatures"][user][f"ed25519:{device_id}"]
            vz.Ed25519PublicKey.from_base64(keys["keys"][f"ed25519:{device_id}"]) \
                .verify_signature(canonical(unsigned), vz.Ed25519Signature.from_base64(signature))
        return devices

    # ---- Olm --------------------------------------------------------------------------------

    async def send_olm(self, user: UserID, device_id: str, keys: dict, event_type: str,
                       content: dict) -> None:
        their_curve = keys["keys"][f"curve25519:{device_id}"]
        sessions = self.olm.get(their_curve)
        if not sessions:
            claimed = await self.client.api.request(Method.POST, Path.v3.keys.claim, {
                "one_time_keys": {user: {device_id: "signed_curve25519"}}})
            otk = next(iter(claimed["one_time_keys"][user][device_id].values()))["key"]
            session = self.account.create_outbound_session(
                vz.Curve25519PublicKey.from_base64(their_curve),
                vz.Curve25519PublicKey.from_base64(otk))
            self.olm[their_curve] = sessions = [session]
        payload = {"type": event_type, "content": content, "sender": self.mxid,
                   "sender_device": self.device_id, "recipient": user,
                   "recipient_keys": {"ed25519": keys["keys"][f"ed25519:{device_id}"]},
                   "keys": {"ed25519": self.ed}}
        message_type, body = sessions[0].encrypt(canonical(payload)).to_parts()
        await self.send_to_device("m.room.encrypted", user, device_id, {
            "algorithm": OLM, "sender_key": self.curve,
            "ciphertext": {their_curve: {"type": message_type, "body": _b64(body)}}})

    async def send_to_device(self, event_type: str, user: UserID, device_id: str,
                             content: dict) -> None:
        await self.client.api.request(
            Method.PUT, Path.v3.sendToDevice[event_type][secrets.token_hex(8)],
            {"messages": {user: {device_id: content}}})

    def _decrypt_olm(self, content: dict) -> dict | None:
        mine = content.get("ciphertext", {}).get(self.curve)
        if mine is None:
            return None
        sender_key = content["sender_key"]
        message = vz.AnyOlmMessage.from_parts(mine["type"], _unb64(mine["body"]))
        for session in self.olm.get(sender_key, []):
            try:
                return json.loads(session.decrypt(message))
            except vz.OlmDecryptionException:
                continue
        pre_key = message.to_pre_key()
        if pre_key is None:
            return None
        session, plaintext = self.account.create_inbound_session(
            vz.Curve25519PublicKey.from_base64(sender_key), pre_key)
        self.olm.setdefault(sender_key, []).insert(0, session)
        return json.loads(plaintext)

    # ---- Megolm -----------------------------------------------------------------------------

    async def share_room_key(self, room_id: RoomID, to: UserID,
                             devices: dict[str, dict] | None = None) -> str:
        """Send this device's current session for the room to a user's devices (a client
        does this before its first message, and when someone joins)."""
        session = self._outbound(room_id)
        for device_id, keys in (devices or await self.devices_of(to)).items():
            await self.send_olm(to, device_id, keys, "m.room_key", {
                "algorithm": MEGOLM, "room_id": room_id, "session_id": session.session_id,
                "session_key": self._first_keys[session.session_id]})
        return session.session_id

    def _outbound(self, room_id: RoomID) -> vz.GroupSession:
        """The room's session; its key as at its first message is kept, so a key shared
        late still opens every message (what clients forward)."""
        session = self.outbound.get(room_id)
        if session is None:
            session = self.outbound[room_id] = vz.GroupSession()
            self._first_keys[session.session_id] = session.session_key.to_base64()
            self.inbound[session.session_id] = vz.InboundGroupSession(session.session_key)
        return session

    def new_session(self, room_id: RoomID) -> None:
        self.outbound.pop(room_id, None)

    async def send_encrypted(self, room_id: RoomID, event_type: str, content: dict) -> str:
        session = self._outbound(room_id)
        plaintext = canonical({"type": event_type, "content": content, "room_id": room_id})
        encrypted = {"algorithm": MEGOLM, "sender_key": self.curve,
                     "ciphertext": session.encrypt(plaintext).to_base64(),
                     "session_id": session.session_id, "device_id": self.device_id}
        if "m.relates_to" in content:
            encrypted["m.relates_to"] = content["m.relates_to"]
        response = await self.client.api.request(
            Method.PUT, Path.v3.rooms[room_id].send["m.room.encrypted"][secrets.token_hex(8)],
            encrypted)
        return response["event_id"]

    async def send_text(self, room_id: RoomID, text: str) -> str:
        return await self.send_encrypted(room_id, "m.room.message",
                                         {"msgtype": "m.text", "body": text})

    def decrypt(self, event: dict) -> dict | None:
        """The clear event of an m.room.encrypted one, or None without its key."""
        content = event["content"]
        session = self.inbound.get(content.get("session_id", ""))
        if session is None:
            return None
        clear = json.loads(session.decrypt(vz.MegolmMessage.from_base64(
            content["ciphertext"])).plaintext)
        return {**event, "type": clear["type"], "content": clear["content"]}

    # ---- sync -------------------------------------------------------------------------------

    async def _sync_loop(self) -> None:
        while True:
            query: dict[str, Any] = {"timeout": "2000" if self._since else "0"}
            if self._since:
                query["since"] = self._since
            try:
                response = await self.client.api.request(Method.GET, Path.v3.sync,
                                                         query_params=query)
            except asyncio.CancelledError:
                raise
            except Exception:
                await asyncio.sleep(0.5)
                continue
            for event in response.get("to_device", {}).get("events", []):
                await self._to_device(event)
            for room_id, room in response.get("rooms", {}).get("join", {}).items():
                self.timeline.setdefault(RoomID(room_id), []).extend(
                    room.get("timeline", {}).get("events", []))
            for room_id in response.get("rooms", {}).get("invite", {}):
                await self.client.join_room_by_id(RoomID(room_id))
            self._since = response["next_batch"]
            self._changed.set()

    async def _to_device(self, event: dict) -> None:
        if event["type"] == "m.room.encrypted":
            clear = self._decrypt_olm(event["content"])
            if clear is None:
                return
            clear["sender"] = event["sender"]
            clear["sender_key"] = event["content"]["sender_key"]
            content = clear["content"]
            if clear["type"] == "m.room_key":
                self.inbound[content["session_id"]] = vz.InboundGroupSession(
                    vz.SessionKey(content["session_key"]))
            elif clear["type"] == "m.forwarded_room_key":
                self.inbound[content["session_id"]] = vz.InboundGroupSession.import_session(
                    vz.ExportedSessionKey(content["session_key"]))
            self.to_device.append(clear)
            return
        self.to_device.append(event)
        if event["type"] == "m.room_key_request" and self.on_key_request is not None:
            await self.on_key_request(event)

    async def wait(self, check: Callable[[], Any], what: str = "the condition") -> Any:
        async def loop() -> Any:
            while True:
                result = check()
                if result:
                    return result
                self._changed.clear()
                await self._changed.wait()

        try:
            return await asyncio.wait_for(loop(), DEADLINE)
        except TimeoutError:
            raise AssertionError(f"{self.mxid}/{self.device_id} never saw {what}") from None

    def mark(self, room_id: RoomID) -> int:
        """Pass as `after=` to wait only for what comes next in the room."""
        return len(self.timeline.get(room_id, []))

    async def wait_for_clear(self, room_id: RoomID, sender: UserID | None,
                             match: Callable[[dict], bool], what: str, after: int = 0) -> dict:
        """Wait for an encrypted event from `sender` (None: anyone else) whose clear content
        matches, among the room's events from index `after` on."""
        def find() -> dict | None:
            for event in self.timeline.get(room_id, [])[after:]:
                if event["type"] != "m.room.encrypted" or event["sender"] != (
                        sender or event["sender"]) or event["sender"] == self.mxid:
                    continue
                clear = self.decrypt(event)
                if clear is not None and match(clear):
                    return clear
            return None

        return await self.wait(find, what)

    async def wait_for_room(self, match: Callable[[dict], bool], what: str) -> RoomID:
        """A room (joined on invite) whose timeline has an encrypted event matching."""
        def find() -> RoomID | None:
            for room_id, events in self.timeline.items():
                for event in events:
                    clear = self.decrypt(event) if event["type"] == "m.room.encrypted" \
                        else None
                    if clear is not None and match(clear):
                        return room_id
            return None

        return await self.wait(find, what)

    async def request_key(self, to: UserID, device_id: str, room_id: RoomID, event: dict
                          ) -> None:
        """Ask a device for the key of an encrypted event (m.room_key_request)."""
        content = event["content"]
        await self.send_to_device("m.room_key_request", to, device_id, {
            "action": "request", "request_id": secrets.token_hex(8),
            "requesting_device_id": self.device_id,
            "body": {"algorithm": MEGOLM, "room_id": room_id,
                     "sender_key": content["sender_key"], "session_id": content["session_id"]}})

    def encrypted_events(self, room_id: RoomID, sender: UserID) -> list[dict]:
        return [e for e in self.timeline.get(room_id, [])
                if e["type"] == "m.room.encrypted" and e["sender"] == sender]


class E2eePerson:
    """A person with a password, so they can log in more devices."""

    def __init__(self, synapse: LocalSynapse, username: str, password: str, mxid: UserID
                 ) -> None:
        self.synapse = synapse
        self.username = username
        self.password = password
        self.mxid = mxid
        self.devices: list[E2eeDevice] = []

    @classmethod
    async def register(cls, synapse: LocalSynapse, prefix: str = "e2ee") -> E2eePerson:
        name = f"{prefix}{secrets.token_hex(4)}"
        password = secrets.token_urlsafe(12)
        info = await asyncio.to_thread(synapse.register_user, name, password)
        return cls(synapse, name, password, UserID(info["user_id"]))

    async def new_device(self) -> E2eeDevice:
        device = await E2eeDevice.login(self.synapse, self.username, self.password)
        self.devices.append(device)
        return device

    async def close(self) -> None:
        for device in self.devices:
            await device.close()


async def open_encrypted_dm(device: E2eeDevice, bot: UserID) -> RoomID:
    """Like Element X: a direct chat created encrypted from the start."""
    return await device.client.create_room(
        is_direct=True, invitees=[bot], preset=RoomCreatePreset.TRUSTED_PRIVATE,
        initial_state=[{"type": "m.room.encryption", "state_key": "",
                        "content": {"algorithm": MEGOLM}}])
