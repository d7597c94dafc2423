"""vault_secret: sealed secrets, one per (profile, persona, field)."""

from __future__ import annotations

import time

import attrs
from mautrix.util.async_db import Database


@attrs.define
class SecretRow:
    profile: str
    persona: str
    field: str
    key_version: int
    nonce: bytes
    ciphertext: bytes


class VaultSecretStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def put(self, row: SecretRow) -> None:
        await self.db.execute(
            "INSERT INTO vault_secret "
            "(profile, persona, field, key_version, nonce, ciphertext, updated_at) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (profile, persona, field) DO UPDATE "
            "SET key_version=excluded.key_version, nonce=excluded.nonce, "
            "ciphertext=excluded.ciphertext, updated_at=excluded.updated_at",
            row.profile, row.persona, row.field, row.key_version, row.nonce, row.ciphertext,
            int(time.time() * 1000),
        )

    async def put_new(self, row: SecretRow) -> bool:
        """Store only if nothing is there yet; False if another writer got there first."""
        inserted = await self.db.fetchval(
            "INSERT INTO vault_secret "
            "(profile, persona, field, key_version, nonce, ciphertext, updated_at) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (profile, persona, field) DO NOTHING "
            "RETURNING field",
            row.profile, row.persona, row.field, row.key_version, row.nonce, row.ciphertext,
            int(time.time() * 1000),
        )
        return inserted is not None

    async def get(self, profile: str, persona: str, field: str) -> SecretRow | None:
        row = await self.db.fetchrow(
            "SELECT profile, persona, field, key_version, nonce, ciphertext FROM vault_secret "
            "WHERE profile=$1 AND persona=$2 AND field=$3",
            profile, persona, field,
        )
        if row is None:
            return None
        return SecretRow(row["profile"], row["persona"], row["field"], row["key_version"],
                         bytes(row["nonce"]), bytes(row["ciphertext"]))

    async def delete(self, profile: str, persona: str, field: str | None = None) -> int:
        if field is None:
            rows = await self.db.fetch(
                "DELETE FROM vault_secret WHERE profile=$1 AND persona=$2 RETURNING field",
                profile, persona,
            )
        else:
            rows = await self.db.fetch(
                "DELETE FROM vault_secret WHERE profile=$1 AND persona=$2 AND field=$3 "
                "RETURNING field",
                profile, persona, field,
            )
        return len(rows)

    async def fields(self, profile: str, persona: str) -> list[str]:
        rows = await self.db.fetch(
            "SELECT field FROM vault_secret WHERE profile=$1 AND persona=$2", profile, persona)
        return [row["field"] for row in rows]

    async def delete_older(self, persona_pattern: str, before: int) -> int:
        """Remove secrets of personas matching the SQL LIKE `persona_pattern` last written
        before `before` (ms)."""
        rows = await self.db.fetch(
            "DELETE FROM vault_secret WHERE persona LIKE $1 AND updated_at < $2 RETURNING field",
            persona_pattern, before)
        return len(rows)

    async def count(self) -> int:
        return await self.db.fetchval("SELECT COUNT(*) FROM vault_secret")
