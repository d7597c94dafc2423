"""The sealed archive of held messages, and the one capture point every path calls.

Remote -> Matrix, Matrix -> remote and backfill all report what they bridged as a `Captured`
to `HoldArchive.capture`. While an active hold covers a message, its content and every later
version, its deletion and its reactions and attachments are kept, sealed with AES-256-GCM under
a key the vault keeps (profile `_compliance`): the database holds ids and ciphertext only.
Capturing never stops bridging: a failure is logged and audited (without content).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import secrets
import time
from collections.abc import Callable
from enum import StrEnum
from typing import Any

import attrs
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..audit import AuditEvent, AuditLog
from ..core.backfill_gate import FROM_HISTORY
from ..db import Storage
from ..db.held_message import HeldAttachment, HeldMessage, HeldReaction, HeldStore, HeldVersion
from ..db.hold import Hold, HoldScope
from ..networks.base import (
    Attachment,
    RemoteEdit,
    RemoteEvent,
    RemoteMessage,
    RemoteReaction,
    RemoteRedaction,
)
from ..security.vault import Vault
from .holds import Holds

log = logging.getLogger("relayforge.compliance.archive")

COMPLIANCE_PROFILE = "_compliance"
_ARCHIVE_PERSONA = "archive"
_ARCHIVE_FIELD = "archive_key"
_AAD_LABEL = "relayforge-hold-v1"


class CaptureKind(StrEnum):
    MESSAGE = "message"
    EDIT = "edit"
    DELETION = "deletion"
    REACTION = "reaction"


@attrs.frozen(kw_only=True)
class Captured:
    """What was bridged, in network-neutral terms: ids from both sides and the content."""

    kind: CaptureKind
    side: str  # "remote", "matrix" or "backfill": where it came from
    network: str
    remote_room: str
    room_mxid: str | None
    remote_id: str | None  # the network's id of this message, edit or reaction
    event_id: str | None  # the Matrix event id of this event
    room_ref: str | None = None  # the id the room gave it (an XMPP MUC's stanza-id)
    target_remote_id: str | None = None  # edits, deletions, reactions: what they change
    target_event_id: str | None = None
    sender_remote: str | None = None
    sender_name: str | None = None
    sender_mxid: str | None = None
    persona_id: str | None = None
    workspace: str | None = None
    text: str | None = None
    html: str | None = None
    attachment: Attachment | None = None
    reply_to: str | None = None
    thread_root: str | None = None
    key: str | None = None
    remote_ts: int | None = None
    matrix_ts: int | None = None

    @classmethod
    def of_remote(cls, network: str, event: RemoteEvent, room_mxid: str | None,
                  event_id: str | None, sender_mxid: str | None, *, side: str = "remote",
                  target_event_id: str | None = None) -> Captured:
        """From a remote event the router (or backfill) just bridged into Matrix."""
        common: dict[str, Any] = dict(
            side=side, network=network, remote_room=event.room.remote_id, room_mxid=room_mxid,
            event_id=event_id, sender_remote=event.sender.remote_id,
            sender_name=event.sender.display_name, sender_mxid=sender_mxid,
            persona_id=event.persona_id, remote_ts=event.timestamp_ms,
            matrix_ts=int(time.time() * 1000), target_event_id=target_event_id)
        if isinstance(event, RemoteMessage):
            return cls(kind=CaptureKind.MESSAGE, remote_id=event.message_id,
                       room_ref=event.room_ref, text=event.text, html=event.html,
                       attachment=event.attachment, reply_to=event.reply_to,
                       thread_root=event.thread_root, **common)
        if isinstance(event, RemoteEdit):
            return cls(kind=CaptureKind.EDIT, remote_id=None, target_remote_id=event.target_id,
                       text=event.text, html=event.html, **common)
        if isinstance(event, RemoteRedaction):
            return cls(kind=CaptureKind.DELETION, remote_id=None,
                       target_remote_id=event.target_id, **common)
        if isinstance(event, RemoteReaction):
            return cls(kind=CaptureKind.REACTION, remote_id=event.reaction_id,
                       target_remote_id=event.target_id, key=event.key, **common)
        raise TypeError(f"not a capturable remote event: {type(event).__name__}")

    @classmethod
    def of_matrix(cls, kind: CaptureKind, network: str, remote_room: str, evt: Any,
                  remote_id: str | None, target: Any = None, **fields: Any) -> Captured:
        """From a Matrix event the router just bridged to the network; `target` is the
        message map row an edit, deletion or reaction changes."""
        return cls(kind=kind, side="matrix", network=network, remote_room=remote_room,
                   room_mxid=str(evt.room_id), remote_id=remote_id, event_id=str(evt.event_id),
                   sender_mxid=str(evt.sender), matrix_ts=evt.timestamp,
                   target_remote_id=target.remote_id if target else None,
                   target_event_id=str(target.mxid) if target else None, **fields)


class Tap:
    """Where the router reports what it bridged; this one keeps nothing (no vault, tests)."""

    async def capture(self, item: Captured) -> None:
        return None


class Sealer:
    """AES-256-GCM with the archive key from the vault, bound to where each value lives."""

    def __init__(self, vault: Vault) -> None:
        self.vault = vault
        self._key: bytes | None = None

    async def _aes(self) -> AESGCM:
        if self._key is None:
            self._key = await self.vault.open_or_create(
                COMPLIANCE_PROFILE, _ARCHIVE_PERSONA, _ARCHIVE_FIELD,
                lambda: AESGCM.generate_key(256))
        return AESGCM(self._key)

    @staticmethod
    def _aad(*where: str | int) -> bytes:
        return json.dumps([_AAD_LABEL, *where], separators=(",", ":")).encode()

    async def seal(self, data: bytes, *where: str | int) -> tuple[bytes, bytes]:
        nonce = os.urandom(12)
        return nonce, (await self._aes()).encrypt(nonce, data, self._aad(*where))

    async def open(self, nonce: bytes, ciphertext: bytes, *where: str | int) -> bytes:
        return (await self._aes()).decrypt(nonce, ciphertext, self._aad(*where))

    async def seal_json(self, value: Any, *where: str | int) -> tuple[bytes, bytes]:
        return await self.seal(json.dumps(value, ensure_ascii=False).encode(), *where)

    async def open_json(self, nonce: bytes, ciphertext: bytes, *where: str | int) -> Any:
        return json.loads(await self.open(nonce, ciphertext, *where))


class HoldArchive(Tap):
    def __init__(self, storage: Storage, holds: Holds, vault: Vault, audit: AuditLog,
                 workspace_of: Callable[[str, str], str] | None = None) -> None:
        self.storage = storage
        self.holds = holds
        self.store = HeldStore(storage.db)
        self.sealer = Sealer(vault)
        self.audit = audit
        # (network, remote room) -> its workspace, as the connector says.
        self.workspace_of = workspace_of
        self.captured = 0
        # Messages being kept right now: an edit, deletion or reaction of one of them (which
        # can be bridged before the message's own capture finished) waits for it.
        self._pending: dict[tuple[str, ...], asyncio.Event] = {}

    def _keys(self, network: str, remote_room: str, refs: tuple[str | None, ...],
              event_id: str | None) -> list[tuple[str, ...]]:
        keys = [("remote", network, remote_room, ref) for ref in refs if ref]
        return keys + ([("matrix", event_id)] if event_id else [])

    async def capture(self, item: Captured) -> None:
        if item.kind == CaptureKind.MESSAGE:
            # Registered before the first await, so a change bridged after it finds it.
            done = asyncio.Event()
            keys = self._keys(item.network, item.remote_room, (item.remote_id, item.room_ref),
                              item.event_id)
            for key in keys:
                self._pending[key] = done
            try:
                await self._capture(item)
            finally:
                done.set()
                for key in keys:
                    if self._pending.get(key) is done:
                        del self._pending[key]
            return
        for key in self._keys(item.network, item.remote_room, (item.target_remote_id,),
                              item.target_event_id):
            if (pending := self._pending.get(key)) is not None:
                await pending.wait()
        await self._capture(item)

    async def _capture(self, item: Captured) -> None:
        try:
            active = await self.holds.active()
            if not active:
                return
            if FROM_HISTORY.get() and item.side == "remote":
                # Brought in by the backfill, through the same router path as live events.
                item = attrs.evolve(item, side="backfill")
            if item.kind == CaptureKind.MESSAGE:
                await self._message(item, active)
            else:
                await self._change(item, {h.id for h in active})
        except Exception as e:
            # Bridging goes on; the admin learns that something held was not kept.
            log.exception("Could not keep a %s of %s %s for a legal hold", item.kind,
                          item.network, item.remote_room)
            await self.audit.append(AuditEvent.LEGAL_HOLD, details={
                "what": "capture_failed", "kind": item.kind.value, "network": item.network,
                "room": item.remote_room, "error": type(e).__name__})

    # ---- what a hold covers ------------------------------------------------------------------

    async def _custodians(self, item: Captured) -> tuple[set[str], set[str]]:
        """The accounts and Matrix users whose message this is, or who received it."""
        accounts: set[str] = set()
        users: set[str] = {item.sender_mxid} if item.sender_mxid else set()
        if item.sender_mxid:
            account = await self.storage.accounts.by_mxid(item.sender_mxid)
            if account:
                accounts.add(account.id)
        personas = []
        if item.persona_id:
            personas.append(await self.storage.personas.get(item.persona_id))
        if item.sender_remote:
            personas.append(await self.storage.personas.by_external(item.network,
                                                                    item.sender_remote))
        for persona in personas:
            if persona is not None:
                account_id = await self.storage.profiles.account_of(persona.profile_id)
                if account_id:
                    accounts.add(account_id)
        for account_id in accounts:
            users.update(await self.storage.accounts.matrix_users(account_id))
        return accounts, users

    def _workspace(self, item: Captured) -> str | None:
        if item.workspace is not None:
            return item.workspace
        if self.workspace_of is None:
            return None
        try:
            return self.workspace_of(item.network, item.remote_room) or None
        except Exception:  # a connector that is not running: no workspace known
            return None

    async def _covering(self, item: Captured, active: list[Hold], workspace: str | None
                        ) -> list[str]:
        ts = item.remote_ts or item.matrix_ts or int(time.time() * 1000)
        custodians: tuple[set[str], set[str]] | None = None
        covering = []
        for hold in active:
            if not hold.covers_time(ts):
                continue
            if hold.scope == HoldScope.ROOM:
                hit = hold.network == item.network and hold.target in (item.remote_room,
                                                                       item.room_mxid)
            elif hold.scope == HoldScope.WORKSPACE:
                hit = hold.network == item.network and hold.target == workspace
            else:
                if custodians is None:
                    custodians = await self._custodians(item)
                accounts, users = custodians
                hit = hold.target in (accounts if hold.scope == HoldScope.ACCOUNT else users)
            if hit:
                covering.append(hold.id)
        return covering

    # ---- keeping it --------------------------------------------------------------------------

    async def _message(self, item: Captured, active: list[Hold]) -> None:
        if not item.remote_id:
            return
        workspace = self._workspace(item)
        covering = await self._covering(item, active, workspace)
        if not covering:
            return
        held = await self.store.add_message(HeldMessage(
            id=secrets.token_hex(12), network=item.network, remote_room=item.remote_room,
            remote_id=item.remote_id, room_ref=item.room_ref, room_mxid=item.room_mxid,
            mxid=item.event_id, workspace=workspace, side=item.side,
            sender_remote=item.sender_remote, sender_name=item.sender_name,
            sender_mxid=item.sender_mxid, persona_id=item.persona_id, reply_to=item.reply_to,
            thread_root=item.thread_root, remote_ts=item.remote_ts, matrix_ts=item.matrix_ts),
            covering)
        if await self.store.versions(held.id):
            return  # delivered twice (or backfilled after it was bridged live)
        await self._version(held, item)
        self.captured += 1

    async def _version(self, held: HeldMessage, item: Captured) -> None:
        payload: dict[str, Any] = {"text": item.text, "html": item.html, "attachment": None}
        if item.attachment is not None:
            data = item.attachment.data
            digest = hashlib.sha256(data).hexdigest()
            payload["attachment"] = {"name": item.attachment.name,
                                     "mimetype": item.attachment.mimetype,
                                     "size": len(data), "sha256": digest}
            nonce, sealed = await self.sealer.seal(data, "attachment", held.id, digest)
            await self.store.add_attachment(HeldAttachment(held.id, digest, len(data), nonce,
                                                           sealed))
        # The seq is chosen by the store; the seal binds the message and a fresh id instead.
        version_id = secrets.token_hex(8)
        payload["version_id"] = version_id
        nonce, sealed = await self.sealer.seal_json(payload, "version", held.id, version_id)
        await self.store.add_version(HeldVersion(
            held.id, 0, item.remote_id, item.event_id, item.side, item.remote_ts,
            item.matrix_ts, nonce, version_id.encode() + b":" + sealed))

    async def _change(self, item: Captured, active_ids: set[str]) -> None:
        target = await self.store.find(item.network, item.remote_room, item.target_remote_id,
                                       item.target_event_id)
        if item.kind == CaptureKind.DELETION and target is None:
            reaction = await self.store.find_reaction(item.network, item.remote_room,
                                                      item.target_remote_id,
                                                      item.target_event_id)
            if reaction is not None and active_ids & set(
                    await self.store.holds_of(reaction.message_id)):
                await self.store.mark_reaction_removed(
                    reaction.id, item.remote_ts or item.matrix_ts or int(time.time() * 1000),
                    item.sender_mxid or item.sender_remote, item.side)
            return
        if target is None or not active_ids & set(await self.store.holds_of(target.id)):
            return
        if item.kind == CaptureKind.EDIT:
            if await self.store.has_version(target.id, item.remote_id, item.event_id):
                return
            await self._version(target, item)
        elif item.kind == CaptureKind.DELETION:
            await self.store.mark_deleted(
                target.id, item.remote_ts or item.matrix_ts or int(time.time() * 1000),
                item.sender_mxid or item.sender_remote, item.side, item.event_id)
        elif item.kind == CaptureKind.REACTION:
            reaction_id = secrets.token_hex(12)
            nonce, sealed = await self.sealer.seal((item.key or "").encode(), "reaction",
                                                   reaction_id)
            await self.store.add_reaction(HeldReaction(
                reaction_id, target.id, item.network, item.remote_room, item.remote_id,
                item.event_id, item.side, item.sender_remote, item.sender_mxid,
                item.remote_ts, item.matrix_ts, nonce, sealed))

    # ---- reading it back (export) ------------------------------------------------------------

    async def open_version(self, version: HeldVersion) -> dict[str, Any]:
        version_id, _, sealed = version.ciphertext.partition(b":")
        return await self.sealer.open_json(version.nonce, sealed, "version",
                                           version.message_id, version_id.decode())

    async def open_reaction(self, reaction: HeldReaction) -> str:
        return (await self.sealer.open(reaction.nonce, reaction.ciphertext, "reaction",
                                       reaction.id)).decode()

    async def open_attachment(self, attachment: HeldAttachment) -> bytes:
        return await self.sealer.open(attachment.nonce, attachment.ciphertext, "attachment",
                                      attachment.message_id, attachment.sha256)


async def purge_unheld(storage: Storage, before_ms: int) -> int:
    """Retention: delete held content captured before `before_ms` that no active hold covers
    any more; returns how many messages went (audit the count, never content)."""
    return await HeldStore(storage.db).purge_unheld(before_ms)
