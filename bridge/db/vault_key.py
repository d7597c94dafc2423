"""vault_master_key and vault_data_key: which master key wraps which profile's data key."""

from __future__ import annotations

import time
from enum import StrEnum

import attrs
from mautrix.util.async_db import Database


class MasterState(StrEnum):
    CURRENT = "current"  # new and rewrapped data keys use it
    OLD = "old"  # some data keys may still be wrapped by it: must stay usable
    RETIRED = "retired"  # nothing is wrapped by it any more


@attrs.define
class DataKeyRow:
    profile: str
    version: int
    master_version: int
    wrapped: bytes


def _now_ms() -> int:
    return int(time.time() * 1000)


class VaultKeyStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def master_versions(self) -> dict[int, MasterState]:
        rows = await self.db.fetch("SELECT version, state FROM vault_master_key ORDER BY version")
        return {row["version"]: MasterState(row["state"]) for row in rows}

    async def current_master(self) -> int | None:
        return await self.db.fetchval(
            "SELECT version FROM vault_master_key WHERE state=$1", MasterState.CURRENT.value
        )

    async def add_master(self, version: int, provider: str) -> None:
        """Make `version` current; the previous current becomes old (still in use)."""
        async with self.db.acquire() as conn, conn.transaction():
            await conn.execute("UPDATE vault_master_key SET state=$1 WHERE state=$2",
                               MasterState.OLD.value, MasterState.CURRENT.value)
            await conn.execute(
                "INSERT INTO vault_master_key (version, provider, state, created_at) "
                "VALUES ($1, $2, $3, $4)",
                version, provider, MasterState.CURRENT.value, _now_ms(),
            )

    async def retire_unused(self) -> list[int]:
        rows = await self.db.fetch(
            "UPDATE vault_master_key SET state=$1 WHERE state=$2 AND version NOT IN "
            "(SELECT DISTINCT master_version FROM vault_data_key) RETURNING version",
            MasterState.RETIRED.value, MasterState.OLD.value,
        )
        return sorted(row["version"] for row in rows)

    async def data_key(self, profile: str) -> DataKeyRow | None:
        row = await self.db.fetchrow(
            "SELECT profile, version, master_version, wrapped FROM vault_data_key WHERE profile=$1",
            profile,
        )
        return DataKeyRow(row["profile"], row["version"], row["master_version"],
                          bytes(row["wrapped"])) if row else None

    async def add_data_key(self, row: DataKeyRow) -> bool:
        """False if another writer created this profile's data key first."""
        created = await self.db.fetchval(
            "INSERT INTO vault_data_key (profile, version, master_version, wrapped, created_at) "
            "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (profile) DO NOTHING RETURNING profile",
            row.profile, row.version, row.master_version, row.wrapped, _now_ms(),
        )
        return created is not None

    async def delete_data_key(self, profile: str) -> bool:
        """Forget a profile's data key, with every secret sealed under it (in one
        transaction): nothing it encrypted can be opened again."""
        async with self.db.acquire() as conn, conn.transaction():
            await conn.execute("DELETE FROM vault_secret WHERE profile=$1", profile)
            deleted = await conn.fetchval(
                "DELETE FROM vault_data_key WHERE profile=$1 RETURNING profile", profile)
        return deleted is not None

    async def data_keys_not_on(self, master_version: int, limit: int = 100) -> list[DataKeyRow]:
        rows = await self.db.fetch(
            "SELECT profile, version, master_version, wrapped FROM vault_data_key "
            "WHERE master_version <> $1 ORDER BY profile LIMIT $2",
            master_version, limit,
        )
        return [DataKeyRow(r["profile"], r["version"], r["master_version"], bytes(r["wrapped"]))
                for r in rows]

    async def rewrapped(self, row: DataKeyRow, master_version: int, wrapped: bytes) -> bool:
        """Swap in the rewrapped key only if nobody changed the row meanwhile."""
        updated = await self.db.fetchval(
            "UPDATE vault_data_key SET master_version=$1, wrapped=$2 "
            "WHERE profile=$3 AND master_version=$4 RETURNING profile",
            master_version, wrapped, row.profile, row.master_version,
        )
        return updated is not None

    async def count_by_master(self) -> dict[int, int]:
        rows = await self.db.fetch(
            "SELECT master_version, COUNT(*) AS n FROM vault_data_key GROUP BY master_version"
        )
        return {row["master_version"]: row["n"] for row in rows}
