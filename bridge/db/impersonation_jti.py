"""impersonation_jti: token ids already used, so an impersonation token works only once."""

from __future__ import annotations

import time

from mautrix.util.async_db import Database


class JtiStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def use(self, jti: str, expires_at_ms: int) -> bool:
        """Record a token id as used; False if it was used before (a replay)."""
        inserted = await self.db.fetchval(
            "INSERT INTO impersonation_jti (jti, expires_at) VALUES ($1, $2) "
            "ON CONFLICT (jti) DO NOTHING RETURNING jti",
            jti, expires_at_ms,
        )
        return inserted is not None

    async def prune(self) -> int:
        """Expired ids can go: an expired token is refused before its id is looked at."""
        rows = await self.db.fetch(
            "DELETE FROM impersonation_jti WHERE expires_at < $1 RETURNING jti",
            int(time.time() * 1000),
        )
        return len(rows)
