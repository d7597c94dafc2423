"""Writing and verifying the audit chain.

Each record carries the MAC of the record before it (`prev_hash`) and its own HMAC-SHA256 over
all its fields, keyed by a key sealed in the vault. Changing, deleting, inserting or reordering
records breaks the chain; removing records from the end is caught by checkpoints kept outside
the database (see `checkpoint.py`).

When a person is forgotten (`forget-me`), their records stay in the chain with their
identifiers replaced by a pseudonym. Each such record keeps its original MAC, so the next
record's `prev_hash` and any checkpoint still match; its own check is then the MAC of its
pseudonymised form together with that original MAC (`pseudonymised_mac`), made with the same
key. Whoever cannot forge one cannot change a pseudonymised record either.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import attrs

from ..db.audit_log import AuditLogStore, AuditRow

log = logging.getLogger("relayforge.audit")

GENESIS = "0" * 64
SYSTEM = "system"
# Detail keys that smell of a secret: refused, so a careless caller cannot log one.
_SECRET_KEY = re.compile(r"token|secret|password|passwd|pin|key|cookie|session|code",
                         re.IGNORECASE)


class AuditEvent(StrEnum):
    ACCOUNT_CREATED = "account_created"
    LINK = "link"
    UNLINK = "unlink"
    MERGE = "merge"
    PENDING_CHOICE = "pending_choice"
    TOKEN_REFRESH = "token_refresh"
    IMPERSONATED_SEND = "impersonated_send"
    # A portal's history brought into Matrix (a new portal, or catching up): counts only.
    BACKFILL = "backfill"
    PAUSE = "pause"
    RESUME = "resume"
    REVOKE = "revoke"
    MFA = "mfa"
    EXPORT = "export"
    KEY_ROTATION = "key_rotation"
    ADMIN_ACTION = "admin_action"
    CONFIRM = "first_send_confirmation"
    CAPABILITY = "capability"
    MFA_ENROLLED = "mfa_enrolled"
    MFA_VERIFIED = "mfa_verified"
    MFA_FAILED = "mfa_failed"
    ANOMALY = "anomaly"
    SESSION_NETWORK_CHANGED = "session_network_changed"
    READ_ONLY = "read_only"
    # A person was forgotten (their identifiers in the log replaced by a pseudonym).
    FORGET = "forget"
    # Retention removed what was past compliance.retention_days (counts only).
    RETENTION_PURGE = "retention_purge"
    # A person's agent (MCP): authorised, revoked, or an act it asked for.
    AGENT = "agent"
    # A legal hold created, listed, released or exported, or what one kept could not be.
    LEGAL_HOLD = "legal_hold"


@attrs.frozen
class AuditProblem:
    seq: int
    message: str


def record_mac(key: bytes, seq: int, ts: str, actor: str, account: str | None,
               profile: str | None, persona: str | None, event_type: str, details: str,
               prev_hash: str) -> str:
    material = json.dumps([seq, ts, actor, account, profile, persona, event_type, details,
                           prev_hash], separators=(",", ":"), ensure_ascii=False)
    return hmac.new(key, material.encode(), hashlib.sha256).hexdigest()


def _row_mac(key: bytes, row: AuditRow) -> str:
    return record_mac(key, row.seq, row.ts, row.actor, row.account, row.profile, row.persona,
                      row.event_type, row.details, row.prev_hash)


_PSEUDONYMISED_LABEL = "relayforge-audit-pseudonymised-v1"


def pseudonymised_mac(key: bytes, row: AuditRow) -> str:
    """The MAC of a pseudonymised record: its new fields and the MAC it was chained with."""
    material = json.dumps([_PSEUDONYMISED_LABEL, row.seq, row.ts, row.actor, row.account,
                           row.profile, row.persona, row.event_type, row.details,
                           row.prev_hash, row.mac], separators=(",", ":"), ensure_ascii=False)
    return hmac.new(key, material.encode(), hashlib.sha256).hexdigest()


def _row_checks(key: bytes, row: AuditRow) -> bool:
    if row.pseudonymised is not None:
        return hmac.compare_digest(pseudonymised_mac(key, row), row.pseudonymised)
    return hmac.compare_digest(_row_mac(key, row), row.mac)


def _check_details(details: Mapping[str, Any]) -> str:
    for name, value in details.items():
        if _SECRET_KEY.search(name) and name not in ("jti", "key_version"):
            raise ValueError(f"audit detail {name!r} looks like a secret; audit records must "
                             "not hold secrets")
        if not isinstance(value, str | int | float | bool | type(None)):
            raise ValueError(f"audit detail {name!r} must be a plain value, not "
                             f"{type(value).__name__}")
    return json.dumps(dict(details), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class AuditLog:
    def __init__(self, store: AuditLogStore, key: bytes) -> None:
        self.store = store
        self._key = key
        self.appended = 0
        self._listeners: list = []

    def on_append(self, listener: Any) -> None:
        """Call `listener(row)` after every append (checkpoints, notices)."""
        self._listeners.append(listener)

    async def append(self, event: AuditEvent | str, *, actor: str = SYSTEM,
                     account: str | None = None, profile: str | None = None,
                     persona: str | None = None, details: Mapping[str, Any] | None = None,
                     ) -> AuditRow:
        event_type = AuditEvent(event).value
        details_json = _check_details(details or {})

        def build(seq: int, prev_mac: str | None) -> AuditRow:
            ts = datetime.now(UTC).isoformat(timespec="microseconds")
            prev = prev_mac or GENESIS
            mac = record_mac(self._key, seq, ts, actor, account, profile, persona, event_type,
                             details_json, prev)
            return AuditRow(seq, ts, actor, account, profile, persona, event_type, details_json,
                            prev, mac)

        for attempt in range(20):
            try:
                row = await self.store.append(build)
                break
            except Exception as e:
                # Another process appended the same sequence number first (SQLite has no
                # advisory lock): read the new head and try again. Anything else is real.
                if not _is_conflict(e) or attempt == 19:
                    raise
                await asyncio.sleep(0.005 * (attempt + 1))
        self.appended += 1
        for listener in self._listeners:
            await listener(row)
        return row

    async def verify(self, checkpoint: tuple[int, str] | None = None,
                     on_progress: Callable[[int], None] | None = None) -> list[AuditProblem]:
        """Check the whole chain; the first problem found is first in the list.

        `checkpoint` is (seq, mac) of a head seen earlier and kept outside the database: the log
        must still reach it, with the same record there.
        """
        problems: list[AuditProblem] = []
        expected_seq, prev = 1, GENESIS
        macs_at_checkpoint = None
        async for row in self.store.scan():
            if row.seq != expected_seq:
                problems.append(AuditProblem(
                    expected_seq, f"record {expected_seq} is missing: records "
                    f"{expected_seq}-{row.seq - 1} were deleted"))
            if not _row_checks(self._key, row):
                problems.append(AuditProblem(
                    row.seq, f"record {row.seq} was changed: its MAC does not match"))
            elif row.prev_hash != prev:
                problems.append(AuditProblem(
                    row.seq, f"record {row.seq} does not follow record {row.seq - 1}: records "
                    "were inserted, deleted or reordered"))
            if checkpoint and row.seq == checkpoint[0]:
                macs_at_checkpoint = row.mac
            expected_seq, prev = row.seq + 1, row.mac
            if on_progress:
                on_progress(row.seq)
        if checkpoint:
            seq, mac = checkpoint
            if expected_seq - 1 < seq:
                problems.append(AuditProblem(
                    expected_seq, f"the log ends at record {expected_seq - 1} but a checkpoint "
                    f"saw record {seq}: records were removed from the end"))
            elif macs_at_checkpoint is not None and not hmac.compare_digest(
                    macs_at_checkpoint, mac):
                problems.append(AuditProblem(
                    seq, f"record {seq} differs from the checkpoint taken of it"))
        return problems

    async def pseudonymise(self, rewrite: Callable[[AuditRow], AuditRow | None]) -> int:
        """Rewrite every record `rewrite` returns a new form for (identifiers replaced), each
        sealed with `pseudonymised_mac`; returns how many were rewritten. A record already
        pseudonymised must still check before it is rewritten again."""
        changed = []
        async for row in self.store.scan():
            new = rewrite(row)
            if new is None or new == row:
                continue
            if not _row_checks(self._key, row):
                raise ValueError(f"audit record {row.seq} does not check; not rewriting it")
            new = attrs.evolve(new, seq=row.seq, ts=row.ts, event_type=row.event_type,
                               prev_hash=row.prev_hash, mac=row.mac, pseudonymised=None)
            changed.append(attrs.evolve(new, pseudonymised=pseudonymised_mac(self._key, new)))
        for row in changed:
            await self.store.pseudonymise(row)
        return len(changed)

    async def latest(self, limit: int, who: str | None = None) -> list[AuditRow]:
        return await self.store.latest(limit, who=who)


def _is_conflict(error: Exception) -> bool:
    text = f"{type(error).__name__} {error}".lower()
    return any(word in text for word in ("unique", "duplicate", "locked", "busy"))

