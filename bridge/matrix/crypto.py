"""End-to-bridge encryption: the bot's Olm device decrypts what people send in encrypted rooms
and encrypts what the bridge sends there (the bot's replies and every ghost's messages).

The only module that imports `mautrix.crypto` (and through it python-olm, the `encryption`
extra), so a move to other Olm bindings touches this file alone.

Appservice mode, not sync mode: the homeserver puts the bot's to-device messages, its
device-list changes and its one-time-key counts into the appservice transactions (MSC2409,
MSC3202), which `BridgeAppService` hands to the handlers set here. The device is made with the
appservice token (MSC4190: no password, works under the Matrix Authentication Service), its id
and account live in the bridge's own database (mautrix's PgCryptoStore, SQLite or
PostgreSQL), and every key request is made as that device (device masquerading).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from mautrix.api import Method, Path
from mautrix.appservice import IntentAPI
from mautrix.client import Client
from mautrix.crypto import OlmMachine, PgCryptoStore, RejectKeyShare
from mautrix.errors import (
    DecryptionError,
    EncryptionError,
    MatrixRequestError,
    MNotFound,
    SessionShareError,
)
from mautrix.types import (
    ASToDeviceEvent,
    DeviceID,
    DeviceIdentity,
    DeviceLists,
    DeviceOTKCount,
    EncryptedEvent,
    EncryptionAlgorithm,
    Event,
    EventType,
    Membership,
    RequestedKeyInfo,
    RoomEncryptionStateEventContent,
    RoomID,
    RoomKeyWithheldCode,
    StateEvent,
    TrustState,
    UserID,
)
from mautrix.util.async_db import Database

from ..db.database import CachedASStateStore

log = logging.getLogger("relayforge.crypto")

# One Olm account in the crypto store: the bot's device.
ACCOUNT_ID = "bot"
DEVICE_NAME = "RelayForge bridge"
# How long the first wait for a late room key lasts before the sender's device is asked for it.
FIRST_WAIT_SECONDS = 3.0


class KeyMissing(Exception):
    """A message whose room key never arrived (or the sender's device withheld it)."""

    def __init__(self, evt: EncryptedEvent, withheld: str | None) -> None:
        super().__init__(f"no room key for {evt.event_id} in {evt.room_id}")
        self.event = evt
        self.withheld = withheld


class BridgeCrypto:
    """The bot's device and its Olm machine, fed from the appservice transactions."""

    def __init__(self, *, server: str, bot: IntentAPI, as_token: str, db: Database,
                 state_store: CachedASStateStore, pickle_key: str,
                 is_ghost: Callable[[str], bool], key_wait_seconds: float) -> None:
        self.db = db
        self.state_store = state_store
        self.is_ghost = is_ghost
        self.key_wait_seconds = key_wait_seconds
        self.bot = bot
        self.client = Client(mxid=bot.mxid, base_url=server, token=as_token,
                             log=logging.getLogger("relayforge.crypto.client"))
        self._pickle_key = pickle_key
        self.store = PgCryptoStore(ACCOUNT_ID, pickle_key, db)
        self.machine = OlmMachine(self.client, self.store, state_store,
                                  log=logging.getLogger("relayforge.crypto.olm"))
        # Keys go to every device of a room's real members (their clients decide trust); who
        # may ask for a key again is decided in `_allow_key_share`, not by trust levels.
        self.machine.send_keys_min_trust = TrustState.UNVERIFIED
        self.machine.share_keys_min_trust = TrustState.UNVERIFIED
        self.machine.allow_key_share = self._allow_key_share
        self._encrypted: dict[RoomID, bool] = {}
        self._share_locks: dict[RoomID, asyncio.Lock] = {}
        # Sessions a late message waits for: a withheld notice for one ends the wait early.
        self._withheld: dict[str, asyncio.Future[str]] = {}
        self._waits: set[asyncio.Task] = set()

    @property
    def device_id(self) -> DeviceID:
        return self.client.device_id

    @property
    def identity_key(self) -> str:
        assert self.machine.account is not None
        return self.machine.account.identity_key

    # ---- the device ------------------------------------------------------------------------

    async def start(self) -> None:
        await PgCryptoStore.upgrade_table.upgrade(self.db)
        await self.store.open()
        device_id = await self.store.get_device_id()
        await self._use_device(device_id or _new_device_id())
        await self.machine.load()
        if not device_id:
            await self.store.put_device_id(self.device_id)
            log.info("Created the bridge's encryption device %s", self.device_id)
        elif self.machine.account.shared and not await self._keys_match_server():
            return  # `_keys_match_server` made a fresh device
        try:
            await self.machine.share_keys()
        except MatrixRequestError as e:
            if "already exists" not in str(e.message):
                raise
            # The server holds one-time keys this account would make again (a database put
            # back from a backup): uploading more would fail the same way for ever.
            log.warning("The homeserver refused the bridge's one-time keys (%s); making a new "
                        "encryption device", e.message)
            await self._replace_device()
        log.info("End-to-bridge encryption is on: device %s, identity key %s", self.device_id,
                 self.identity_key)

    async def _use_device(self, device_id: DeviceID) -> None:
        """Create (or keep) the device with the appservice token; idempotent on the server, so
        a restart never makes a second device. Every later request masquerades as it."""
        await self.client.create_device_msc4190(device_id, DEVICE_NAME)

    async def _keys_match_server(self) -> bool:
        """After a restart: are our identity keys still the ones the server publishes?"""
        mxid, device_id = self.client.mxid, self.device_id
        response = await self.client.query_keys([mxid])
        published = response.device_keys.get(mxid, {}).get(device_id)
        account = self.machine.account
        if published is None or not published.keys:
            # The server lost them (the device was deleted and made again by `_use_device`):
            # publish the same identity again, so people's sessions with it stay valid.
            log.warning("The homeserver had no keys for device %s; uploading them again",
                        device_id)
            account.shared = False
            return True
        if (published.ed25519, published.curve25519) == (account.signing_key,
                                                           account.identity_key):
            return True
        log.warning("Device %s has other keys on the homeserver than in the bridge's "
                    "database; making a new encryption device", device_id)
        await self._replace_device()
        return False

    async def _replace_device(self) -> None:
        """Drop the old device on the server and in the store and start a fresh one: one
        device at a time, never a loop of failed uploads."""
        old = self.device_id
        try:
            self.client.api.as_device_id = None
            await self.client.api.request(Method.DELETE, Path.v3.devices[old])
        except MatrixRequestError as e:
            log.warning("Could not delete the old encryption device %s: %s", old, e.message)
        await self.store.delete()
        # A fresh store object: the old one keeps the deleted account in memory.
        self.store = PgCryptoStore(ACCOUNT_ID, self._pickle_key, self.db)
        await self.store.open()
        self.machine.crypto_store = self.store
        self.machine.account = None
        await self._use_device(_new_device_id())
        await self.store.put_device_id(self.device_id)
        await self.machine.load()
        await self.machine.share_keys()
        log.info("The bridge's encryption device is now %s", self.device_id)

    async def stop(self) -> None:
        for task in list(self._waits):
            task.cancel()
        await self.store.close()
        await self.client.api.session.close()

    # ---- what the transactions carry -------------------------------------------------------

    async def to_device(self, evt: ASToDeviceEvent) -> None:
        if evt.type in (EventType.ROOM_KEY_WITHHELD, EventType.ORG_MATRIX_ROOM_KEY_WITHHELD):
            waiter = self._withheld.get(str(getattr(evt.content, "session_id", "")))
            if waiter is not None and not waiter.done():
                waiter.set_result(str(evt.content.code))
            return
        await self.machine.handle_as_to_device_event(evt)

    async def device_lists(self, lists: DeviceLists) -> None:
        # Awaited, not in the background: the transaction is acknowledged after it.
        await self.machine.handle_device_lists(lists)

    async def otk_counts(self, counts: dict[UserID, dict[DeviceID, DeviceOTKCount]]) -> None:
        mine = counts.get(self.client.mxid, {}).get(self.device_id)
        if mine is not None:
            await self.machine.handle_otk_count(mine)

    async def member_event(self, evt: StateEvent) -> None:
        """A real person joining or leaving rotates the room's session; ghosts coming and
        going do not (they never receive keys)."""
        if self.is_ghost(evt.state_key) or evt.state_key == self.client.mxid:
            return
        await self.machine.handle_member_event(evt)

    # ---- rooms ----------------------------------------------------------------------------

    def room_encrypted(self, room_id: RoomID) -> None:
        """Called for each m.room.encryption event (the state store records its content)."""
        self._encrypted[room_id] = True

    async def is_encrypted(self, room_id: RoomID) -> bool:
        known = self._encrypted.get(room_id)
        if known is not None:
            return known
        if await self.state_store.is_encrypted(room_id):
            self._encrypted[room_id] = True
            return True
        # Not known here (a room joined before the bridge could see its state): ask once.
        try:
            content = await self.bot.get_state_event(room_id, EventType.ROOM_ENCRYPTION)
        except MNotFound:
            self._encrypted[room_id] = False
            return False
        await self.state_store.set_encryption_info(room_id, content)
        self._encrypted[room_id] = True
        return True

    async def enable_in(self, room_id: RoomID) -> None:
        """Turn encryption on in a room the bridge made (a new portal); recorded before the
        homeserver echoes it, so the first message is already encrypted."""
        content = RoomEncryptionStateEventContent(algorithm=EncryptionAlgorithm.MEGOLM_V1)
        await self.bot.send_state_event(room_id, EventType.ROOM_ENCRYPTION, content)
        await self.state_store.set_encryption_info(room_id, content)
        self._encrypted[room_id] = True

    async def encrypt(self, room_id: RoomID, event_type: EventType, content: Any
                      ) -> tuple[EventType, Any]:
        try:
            return EventType.ROOM_ENCRYPTED, await self.machine.encrypt_megolm_event(
                room_id, event_type, content)
        except EncryptionError:
            pass  # no session yet, or it expired or was rotated: share a new one
        lock = self._share_locks.setdefault(room_id, asyncio.Lock())
        async with lock:
            try:
                await self.machine.share_group_session(room_id, await self._real_members(room_id))
            except SessionShareError:
                pass  # shared while this one waited for the lock
        return EventType.ROOM_ENCRYPTED, await self.machine.encrypt_megolm_event(
            room_id, event_type, content)

    async def _real_members(self, room_id: RoomID) -> list[UserID]:
        """Who gets the room key: people, never ghosts or the bot (their devices, if any,
        belong to other bridges' databases or none)."""
        members = await self.bot.get_members(room_id)  # also refreshes the state store
        return [UserID(m.state_key) for m in members
                if m.content.membership in (Membership.JOIN, Membership.INVITE)
                and m.state_key != self.client.mxid and not self.is_ghost(m.state_key)]

    # ---- decryption -----------------------------------------------------------------------

    async def decrypt(self, evt: EncryptedEvent) -> Event:
        """Decrypt now; raises SessionNotFound when the key has not arrived (yet)."""
        return await self.machine.decrypt_megolm_event(evt)

    def decrypt_later(self, evt: EncryptedEvent, handle: Callable[[Event], Awaitable[None]],
                      missing: Callable[[KeyMissing], Awaitable[None]]) -> None:
        """Wait for a late key in the background (it arrives in a later transaction, which
        the homeserver sends only after this one is acknowledged): first briefly, then after
        asking the sender's device for it. Then handle the message, or report it missing."""
        task = asyncio.create_task(self._wait_and_decrypt(evt, handle, missing),
                                   name=f"late key {evt.event_id}")
        self._waits.add(task)
        task.add_done_callback(self._waits.discard)

    async def _wait_and_decrypt(self, evt: EncryptedEvent,
                                handle: Callable[[Event], Awaitable[None]],
                                missing: Callable[[KeyMissing], Awaitable[None]]) -> None:
        content = evt.content
        session_id = content.session_id
        withheld: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._withheld[session_id] = withheld
        try:
            first = min(FIRST_WAIT_SECONDS, self.key_wait_seconds)
            got = await self.machine.wait_for_session(evt.room_id, session_id, timeout=first)
            if not got and content.device_id:
                log.info("Asking %s's device %s for the key of %s", evt.sender,
                         content.device_id, evt.event_id)
                await self.machine.request_room_key(
                    evt.room_id, content.sender_key, session_id,
                    {evt.sender: [content.device_id]}, timeout=0)
                arrived = asyncio.ensure_future(self.machine.wait_for_session(
                    evt.room_id, session_id, timeout=max(self.key_wait_seconds - first, 0)))
                done, _ = await asyncio.wait({arrived, withheld},
                                             return_when=asyncio.FIRST_COMPLETED)
                got = arrived in done and arrived.result()
                if not got:
                    arrived.cancel()
            if got:
                decrypted = await self.decrypt(evt)
                await handle(decrypted)
                return
            code = withheld.result() if withheld.done() else None
            log.warning("No key arrived for %s in %s%s", evt.event_id, evt.room_id,
                        f" (withheld: {code})" if code else "")
            await missing(KeyMissing(evt, code))
        except DecryptionError:
            log.warning("Could not decrypt %s in %s", evt.event_id, evt.room_id, exc_info=True)
            await missing(KeyMissing(evt, None))
        except Exception:
            log.exception("Handling the late message %s failed", evt.event_id)
        finally:
            self._withheld.pop(session_id, None)

    # ---- key requests ---------------------------------------------------------------------

    async def _allow_key_share(self, device: DeviceIdentity, request: RequestedKeyInfo
                               ) -> bool:
        """A room key of the bridge's goes only to a device the homeserver lists for a person
        who is in the room now (mautrix ignores devices it cannot find)."""
        if device.trust == TrustState.BLACKLISTED:
            raise RejectKeyShare(f"blacklisted device {device.user_id}/{device.device_id}",
                                 code=RoomKeyWithheldCode.BLACKLISTED,
                                 reason="This device is blocked by the bridge")
        member = await self.state_store.get_member(request.room_id, device.user_id)
        if (self.is_ghost(device.user_id) or member is None
                or member.membership != Membership.JOIN):
            log.info("Refused a key request from %s/%s: not in %s", device.user_id,
                     device.device_id, request.room_id)
            raise RejectKeyShare(f"{device.user_id} is not in {request.room_id}",
                                 code=RoomKeyWithheldCode.UNAUTHORIZED,
                                 reason="You are not in that room")
        log.info("Sharing the key of session %s with %s/%s", request.session_id,
                 device.user_id, device.device_id)
        return True


def _new_device_id() -> DeviceID:
    return DeviceID("RELAYFORGE" + secrets.token_hex(5).upper())


def pickle_key_from(raw: bytes) -> str:
    """The account and sessions are pickled (encrypted) with a key the vault keeps, so the
    database alone does not give the bot's device away."""
    return base64.b64encode(raw).decode()
