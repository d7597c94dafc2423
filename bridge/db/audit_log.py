"""audit_log: the append-only, hash-chained audit trail (logic in `bridge.audit`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import attrs
from mautrix.util.async_db import Database, Scheme

# Any constant: the PostgreSQL advisory lock that makes appends to the chain one at a time.
_APPEND_LOCK = 0x52_46_41_55_44  # "RFAUD"


@attrs.frozen
class AuditRow:
    seq: int
    ts: str
    actor: str
    account: str | None
    profile: str | None
    persona: str | None
    event_type: str
    details: str
    prev_hash: str
    mac: str
    # Set when the record's person was forgotten: the MAC of its pseudonymised form.
    pseudonymised: str | None = None


_COLUMNS = ("seq, ts, actor, account, profile, persona, event_type, details, prev_hash, mac, "
            "pseudonymised")


class AuditLogStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def append(self, build: Callable[[int, str | None], AuditRow]) -> AuditRow:
        """Insert the next record. `build(seq, prev_mac)` makes it from the current head.

        One transaction reads the head and inserts after it; on PostgreSQL an advisory lock
        makes concurrent appenders wait their turn. The primary key on `seq` is the last line
        of defence: a writer that lost a race fails instead of forking the chain.
        """
        async with self.db.acquire() as conn, conn.transaction():
            if self.db.scheme != Scheme.SQLITE:
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _APPEND_LOCK)
            head = await conn.fetchrow("SELECT seq, mac FROM audit_log ORDER BY seq DESC LIMIT 1")
            row = build(head["seq"] + 1 if head else 1, head["mac"] if head else None)
            await conn.execute(
                f"INSERT INTO audit_log ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, "
                "$10, $11)",
                *attrs.astuple(row),
            )
        return row

    async def head(self) -> AuditRow | None:
        row = await self.db.fetchrow(
            f"SELECT {_COLUMNS} FROM audit_log ORDER BY seq DESC LIMIT 1"
        )
        return AuditRow(**row) if row else None

    async def get(self, seq: int) -> AuditRow | None:
        row = await self.db.fetchrow(f"SELECT {_COLUMNS} FROM audit_log WHERE seq=$1", seq)
        return AuditRow(**row) if row else None

    async def latest(self, limit: int, *, who: str | None = None) -> list[AuditRow]:
        """The newest records, oldest first; `who` limits them to one actor or account."""
        if who is None:
            rows = await self.db.fetch(
                f"SELECT {_COLUMNS} FROM audit_log ORDER BY seq DESC LIMIT $1", limit
            )
        else:
            rows = await self.db.fetch(
                f"SELECT {_COLUMNS} FROM audit_log WHERE actor=$1 OR account=$1 "
                "ORDER BY seq DESC LIMIT $2",
                who, limit,
            )
        return [AuditRow(**row) for row in reversed(rows)]

    async def pseudonymise(self, row: AuditRow) -> None:
        """Replace a record's identifying fields with their pseudonymised form (its MAC and
        place in the chain stay; `row.pseudonymised` is the MAC of the new form)."""
        await self.db.execute(
            "UPDATE audit_log SET actor=$1, account=$2, profile=$3, persona=$4, details=$5, "
            "pseudonymised=$6 WHERE seq=$7",
            row.actor, row.account, row.profile, row.persona, row.details, row.pseudonymised,
            row.seq)

    async def scan(self, batch: int = 1000) -> AsyncIterator[AuditRow]:
        """Every record in sequence order, in batches (the log can be long)."""
        after = 0
        while True:
            rows = await self.db.fetch(
                f"SELECT {_COLUMNS} FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2",
                after, batch,
            )
            for row in rows:
                yield AuditRow(**row)
            if len(rows) < batch:
                return
            after = rows[-1]["seq"]
