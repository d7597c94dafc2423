"""Checkpoints of the audit head, kept outside the database.

The chain inside the table cannot show that records were cut off its end; a checkpoint can:
the log must still reach the record it names, unchanged. The file is MAC-protected with the
audit key, so it cannot be rewritten to match a truncated log either.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime
from pathlib import Path

import attrs

from ..db.audit_log import AuditLogStore, AuditRow
from ..util.files import write_private

_LABEL = "relayforge-audit-checkpoint-v1"


class CheckpointError(Exception):
    pass


@attrs.frozen
class Checkpoint:
    seq: int
    mac: str
    ts: str


def _sign(key: bytes, seq: int, mac: str, ts: str) -> str:
    material = json.dumps([_LABEL, seq, mac, ts], separators=(",", ":")).encode()
    return hmac.new(key, material, hashlib.sha256).hexdigest()


class CheckpointFile:
    def __init__(self, path: str, key: bytes) -> None:
        self.path = Path(path)
        self._key = key

    def write(self, row: AuditRow) -> Checkpoint:
        ts = datetime.now(UTC).isoformat(timespec="seconds")
        data = {"seq": row.seq, "mac": row.mac, "ts": ts,
                "signature": _sign(self._key, row.seq, row.mac, ts)}
        write_private(self.path, json.dumps(data))
        return Checkpoint(row.seq, row.mac, ts)

    def read(self) -> Checkpoint | None:
        if not self.path.exists():
            return None
        try:
            data = json.loads(self.path.read_text())
            seq, mac, ts, signature = data["seq"], data["mac"], data["ts"], data["signature"]
        except (ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"the audit checkpoint {self.path} is unreadable: {e}") from e
        if not hmac.compare_digest(_sign(self._key, seq, mac, ts), signature):
            raise CheckpointError(f"the audit checkpoint {self.path} was altered: its "
                                  "signature does not match")
        return Checkpoint(seq, mac, ts)


class Checkpointer:
    """Writes a checkpoint every `every` records, and of the head when asked (at shutdown)."""

    def __init__(self, file: CheckpointFile, store: AuditLogStore, every: int) -> None:
        self.file = file
        self.store = store
        self.every = every

    async def __call__(self, row: AuditRow) -> None:
        if row.seq % self.every == 0:
            self.file.write(row)

    async def write_head(self) -> Checkpoint | None:
        head = await self.store.head()
        return self.file.write(head) if head else None
