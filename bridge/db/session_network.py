"""session_network: the client network each web or provisioning session started from."""

from __future__ import annotations

import attrs
from mautrix.util.async_db import Database


@attrs.frozen
class SessionNetwork:
    account_id: str
    network: str
    country: str | None
    refused_at: int | None


class SessionNetworkStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, credential_hash: str, now: int) -> SessionNetwork | None:
        row = await self.db.fetchrow(
            "SELECT account_id, network, country, refused_at FROM session_network "
            "WHERE credential=$1 AND expires_at > $2", credential_hash, now)
        return SessionNetwork(**row) if row else None

    async def bind(self, credential_hash: str, account_id: str, network: str,
                   country: str | None, now: int, expires_at: int) -> None:
        await self.db.execute("DELETE FROM session_network WHERE expires_at < $1", now)
        # A concurrent first request from the same client may have bound it already.
        await self.db.execute(
            "INSERT INTO session_network (credential, account_id, network, country, "
            "created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6) "
            "ON CONFLICT (credential) DO NOTHING",
            credential_hash, account_id, network, country, now, expires_at)

    async def refuse(self, credential_hash: str, now: int) -> None:
        await self.db.execute(
            "UPDATE session_network SET refused_at=$2 WHERE credential=$1 AND refused_at IS NULL",
            credential_hash, now)
