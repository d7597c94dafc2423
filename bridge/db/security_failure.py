"""security_failure: failed checks per account (and persona), for rate limits and anomalies."""

from __future__ import annotations

from mautrix.util.async_db import Database


class SecurityFailureStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(self, account_id: str, persona_id: str | None, kind: str, now: int) -> None:
        await self.db.execute(
            "INSERT INTO security_failure (account_id, persona_id, kind, at) "
            "VALUES ($1, $2, $3, $4)", account_id, persona_id, kind, now)

    async def of_kind(self, account_id: str, kind: str, since: int) -> list[int]:
        """When each failure of this kind happened since `since`, oldest first (rate limits
        count these whether or not an anomaly acted on them)."""
        rows = await self.db.fetch(
            "SELECT at FROM security_failure WHERE account_id=$1 AND kind=$2 AND at >= $3 "
            "ORDER BY at", account_id, kind, since)
        return [r["at"] for r in rows]

    async def pending(self, account_id: str, persona_id: str | None, since: int) -> int:
        """Failures not yet acted on, for the account (persona None) or one persona."""
        return await self.db.fetchval(
            "SELECT COUNT(*) FROM security_failure WHERE account_id=$1 AND at >= $2 "
            "AND cleared_at IS NULL AND "
            + ("persona_id IS NULL" if persona_id is None else "persona_id=$3"),
            account_id, since, *(() if persona_id is None else (persona_id,)))

    async def clear(self, account_id: str, persona_id: str | None, since: int, now: int
                    ) -> list[str]:
        """Mark the pending failures as acted on; returns their kinds. Only one of two racing
        callers gets them, so an anomaly is acted on once."""
        rows = await self.db.fetch(
            "UPDATE security_failure SET cleared_at=$3 WHERE account_id=$1 AND at >= $2 "
            "AND cleared_at IS NULL AND "
            + ("persona_id IS NULL" if persona_id is None else "persona_id=$4")
            + " RETURNING kind",
            account_id, since, now, *(() if persona_id is None else (persona_id,)))
        return [r["kind"] for r in rows]
