"""Writing a hold's export bundle: JSON lines per message version with each network's own
ids, attachments named by SHA-256, the hold, custodians and rooms, an RSMF 2.0 manifest, and
a manifest of every file's SHA-256 signed with the bridge's Ed25519 export key (in the vault).
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..audit import AuditEvent, AuditLog
from ..db import Storage
from ..db.held_message import HeldMessage, HeldStore, HeldVersion
from ..db.hold import Hold, HoldScope
from ..security.vault import Vault
from .archive import COMPLIANCE_PROFILE, HoldArchive
from .holds import Holds, iso
from .rsmf import rsmf_manifest
from .verify import MANIFEST, SIGNATURE, bundle_files, file_sha256

FORMAT = "relayforge-hold-export/1"


async def export_signing_key(vault: Vault) -> Ed25519PrivateKey:
    raw = await vault.open_or_create(
        COMPLIANCE_PROFILE, "export", "export_signing_key",
        lambda: Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
            serialization.NoEncryption()))
    return Ed25519PrivateKey.from_private_bytes(raw)


async def export_public_key_pem(vault: Vault) -> bytes:
    return (await export_signing_key(vault)).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def network_ids(network: str, remote_room: str, remote_id: str | None,
                room_ref: str | None) -> dict[str, str | None]:
    """The network's own names for a message, as its API or protocol spells them."""
    first, _, rest = remote_room.partition("/")
    if network == "slack":
        return {"team": first, "channel": rest or first, "ts": remote_id}
    if network == "discord":
        return {"guild": first, "channel": rest or first, "message": remote_id}
    if network == "telegram":
        return {"chat": remote_room, "message": remote_id}
    if network == "xmpp":
        return {"room": remote_room, "stanza_id": room_ref, "origin_id": remote_id}
    return {"room": remote_room, "message": remote_id, "room_ref": room_ref}


class BundleWriter:
    def __init__(self, storage: Storage, holds: Holds, archive: HoldArchive, vault: Vault,
                 audit: AuditLog) -> None:
        self.storage = storage
        self.holds = holds
        self.archive = archive
        self.store = HeldStore(storage.db)
        self.vault = vault
        self.audit = audit

    async def write(self, name: str, out: Path, actor: str,
                    on_progress: Callable[[int], None] | None = None) -> dict[str, Any]:
        hold = await self.holds.get(name)
        _fresh_directory(out)
        messages = await self.store.of_hold(hold.id)
        summaries: list[dict[str, Any]] = []
        rooms: dict[tuple[str, str], dict[str, Any]] = {}
        by_remote = {(m.network, m.remote_room, m.remote_id): m for m in messages}
        with (out / "messages.jsonl").open("w", encoding="utf-8") as lines:
            for done, message in enumerate(messages, 1):
                summary = await self._message(message, out, by_remote)
                summaries.append(summary)
                for record in summary.pop("_records"):
                    lines.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")
                rooms.setdefault((message.network, message.remote_room), {
                    "network": message.network, "remote_room": message.remote_room,
                    "room_mxid": message.room_mxid, "workspace": message.workspace})
                if on_progress:
                    on_progress(done)
        for room in rooms.values():
            portal = await self.storage.portals.get(room["network"], room["remote_room"])
            room["name"] = portal.name if portal else None
        custodians = await self._custodians(hold)
        _write_json(out / "hold.json", _hold_json(hold))
        _write_json(out / "custodians.json", custodians)
        _write_json(out / "rooms.json", list(rooms.values()))
        custodian_ids = {u for c in custodians for u in c.get("matrix_users", [])}
        _write_json(out / "rsmf_manifest.json",
                    rsmf_manifest(summaries, list(rooms.values()), custodian_ids))
        key = await export_signing_key(self.vault)
        public = key.public_key().public_bytes(serialization.Encoding.Raw,
                                               serialization.PublicFormat.Raw)
        manifest = {
            "format": FORMAT, "hold": hold.name, "created_at": iso(int(time.time() * 1000)),
            "hash": "sha256", "signature": "ed25519 over the bytes of manifest.json, base64 "
            "in manifest.sig", "public_key_sha256": hashlib.sha256(public).hexdigest(),
            "files": {n: file_sha256(out / n) for n in bundle_files(out)},
        }
        raw = json.dumps(manifest, indent=1, sort_keys=True).encode()
        (out / MANIFEST).write_bytes(raw)
        (out / SIGNATURE).write_bytes(base64.b64encode(key.sign(raw)) + b"\n")
        await self.audit.append(AuditEvent.LEGAL_HOLD, actor=actor, details={
            "what": "exported", "hold": hold.name, "messages": len(messages),
            "files": len(manifest["files"]) + 2})
        return {"messages": len(messages), "files": len(manifest["files"]) + 2}

    async def _message(self, message: HeldMessage, out: Path,
                       by_remote: dict[tuple[str, str, str], HeldMessage]) -> dict[str, Any]:
        versions = await self.store.versions(message.id)
        opened = [await self.archive.open_version(v) for v in versions]
        reactions = []
        for reaction in await self.store.reactions(message.id):
            reactions.append({
                "key": await self.archive.open_reaction(reaction),
                "network_id": reaction.remote_id, "matrix_event_id": reaction.mxid,
                "side": reaction.side,
                "sender": {"network": message.network, "remote_id": reaction.sender_remote,
                           "matrix_user": reaction.sender_mxid, "name": None},
                "remote_timestamp": iso(reaction.remote_ts),
                "matrix_timestamp": iso(reaction.matrix_ts),
                "removed": None if reaction.removed_at is None else {
                    "at": iso(reaction.removed_at), "by": reaction.removed_by,
                    "side": reaction.removed_side}})
        deletion = None if message.deleted_at is None else {
            "at": iso(message.deleted_at), "by": message.deleted_by,
            "side": message.deleted_side, "matrix_event_id": message.deletion_mxid}

        def related(remote: str | None) -> dict[str, str | None] | None:
            if not remote:
                return None
            held = by_remote.get((message.network, message.remote_room, remote))
            return {"network_id": remote, "export_id": held.id if held else None,
                    "matrix_event_id": held.mxid if held else None}

        sender = {"network": message.network, "remote_id": message.sender_remote,
                  "name": message.sender_name, "matrix_user": message.sender_mxid,
                  "persona": await self._persona(message.persona_id)}
        chain = [v.mxid or v.remote_id for v in versions]
        records, version_summaries = [], []
        for index, (version, content) in enumerate(zip(versions, opened, strict=True)):
            attachment = await self._attachment(message, content.get("attachment"), out)
            timestamp = iso(version.remote_ts or version.matrix_ts)
            records.append({
                "record": "message_version", "export_id": message.id, "version": index,
                "versions": len(versions), "network": message.network,
                "network_ids": network_ids(message.network, message.remote_room,
                                           version.remote_id if index else message.remote_id,
                                           message.room_ref if not index else None),
                "original_network_ids": network_ids(message.network, message.remote_room,
                                                    message.remote_id, message.room_ref),
                "workspace": message.workspace, "matrix_room_id": message.room_mxid,
                "matrix_event_id": version.mxid, "original_matrix_event_id": message.mxid,
                "sender": sender, "side": version.side,
                "remote_timestamp": iso(version.remote_ts),
                "matrix_timestamp": iso(version.matrix_ts),
                "text": content.get("text"), "html": content.get("html"),
                "attachment": attachment,
                "reply_to": related(message.reply_to),
                "thread_root": related(message.thread_root),
                "edit_chain": chain, "replaces": chain[index - 1] if index else None,
                "deletion": deletion, "reactions": reactions,
            })
            version_summaries.append({"text": content.get("text"), "timestamp": timestamp,
                                      "attachment": attachment})
        reply, thread = related(message.reply_to), related(message.thread_root)
        return {
            "_records": records, "id": message.id, "network": message.network,
            "remote_room": message.remote_room, "sender": sender,
            "network_ids": network_ids(message.network, message.remote_room, message.remote_id,
                                       message.room_ref),
            "matrix_event_id": message.mxid, "versions": version_summaries,
            "deletion": deletion, "reactions": reactions,
            "reply_to_id": reply and reply["export_id"],
            "thread_root_id": thread and thread["export_id"],
        }

    async def _attachment(self, message: HeldMessage, meta: dict[str, Any] | None,
                          out: Path) -> dict[str, Any] | None:
        if not meta:
            return None
        stored = await self.store.attachment(message.id, meta["sha256"])
        file = f"attachments/{meta['sha256']}"
        if stored is not None and not _exists(out / file):
            data = await self.archive.open_attachment(stored)
            assert hashlib.sha256(data).hexdigest() == meta["sha256"]
            (out / file).write_bytes(data)
        return {**meta, "file": file}

    async def _persona(self, persona_id: str | None) -> dict[str, Any] | None:
        """The linked account that sent or received it (its descriptor, never a secret)."""
        if persona_id is None:
            return None
        persona = await self.storage.personas.get(persona_id)
        if persona is None:  # unlinked since: its id is all that is left
            return {"id": persona_id}
        return {"id": persona_id, **persona.descriptor()}

    async def _custodians(self, hold: Hold) -> list[dict[str, Any]]:
        if hold.scope == HoldScope.USER:
            account = await self.storage.accounts.by_mxid(hold.target)
            return [{"matrix_users": [hold.target], "account": account.id if account else None}]
        if hold.scope == HoldScope.ACCOUNT:
            users = await self.storage.accounts.matrix_users(hold.target)
            personas = []
            for profile in await self.storage.profiles.for_account(hold.target):
                personas += [p.descriptor() for p in
                             await self.storage.personas.for_profile(profile.id)]
            return [{"account": hold.target, "matrix_users": users, "personas": personas}]
        return []


def _hold_json(hold: Hold) -> dict[str, Any]:
    return {"name": hold.name, "reason": hold.reason, "scope": hold.scope.value,
            "network": hold.network, "target": hold.target, "from": iso(hold.starts_at),
            "until": iso(hold.ends_at), "created_by": hold.created_by,
            "created_at": iso(hold.created_at), "released_by": hold.released_by,
            "released_at": iso(hold.released_at)}


def _fresh_directory(out: Path) -> None:
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; export into a new directory")
    (out / "attachments").mkdir(parents=True, exist_ok=True)


def _exists(path: Path) -> bool:
    return path.exists()


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, ensure_ascii=False, indent=1, sort_keys=True) + "\n",
                    encoding="utf-8")


__all__ = ["BundleWriter", "HeldVersion", "export_public_key_pem", "export_signing_key",
           "network_ids"]
