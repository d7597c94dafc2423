"""profile: a named set of personas (e.g. Jobb, Privat), each with its own Matrix space."""

from __future__ import annotations

import time

import attrs
from mautrix.util.async_db import Database


@attrs.define
class Profile:
    id: str
    account_id: str
    name: str
    space_mxid: str | None
    created_at: int = attrs.field(factory=lambda: int(time.time() * 1000))


_COLUMNS = "id, account_id, name, space_mxid, created_at"


class ProfileStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(self, profile: Profile) -> bool:
        """False if the account already has a profile with this name."""
        added = await self.db.fetchval(
            f"INSERT INTO profile ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5) "
            "ON CONFLICT (account_id, name) DO NOTHING RETURNING id",
            *attrs.astuple(profile),
        )
        return added is not None

    async def get(self, profile_id: str) -> Profile | None:
        row = await self.db.fetchrow(f"SELECT {_COLUMNS} FROM profile WHERE id=$1", profile_id)
        return Profile(**row) if row else None

    async def without_space(self, account_id: str | None = None) -> list[str]:
        """Profiles whose Matrix space is still owed (it is made after the first answer)."""
        if account_id is None:
            rows = await self.db.fetch("SELECT id FROM profile WHERE space_mxid IS NULL "
                                       "ORDER BY created_at")
        else:
            rows = await self.db.fetch("SELECT id FROM profile WHERE space_mxid IS NULL AND "
                                       "account_id=$1 ORDER BY created_at", account_id)
        return [row["id"] for row in rows]

    async def for_account(self, account_id: str) -> list[Profile]:
        rows = await self.db.fetch(
            f"SELECT {_COLUMNS} FROM profile WHERE account_id=$1 ORDER BY created_at, name",
            account_id,
        )
        return [Profile(**row) for row in rows]

    async def by_name(self, account_id: str, name: str) -> Profile | None:
        row = await self.db.fetchrow(
            f"SELECT {_COLUMNS} FROM profile WHERE account_id=$1 AND lower(name)=lower($2)",
            account_id, name,
        )
        return Profile(**row) if row else None

    async def account_of(self, profile_id: str) -> str | None:
        return await self.db.fetchval("SELECT account_id FROM profile WHERE id=$1", profile_id)

    async def name_of(self, profile_id: str) -> str | None:
        return await self.db.fetchval("SELECT name FROM profile WHERE id=$1", profile_id)

    async def first_matrix_user(self, profile_id: str) -> str | None:
        """The Matrix user who joined the profile's account first."""
        return await self.db.fetchval(
            "SELECT m.mxid FROM profile p JOIN account_matrix_user m "
            "ON m.account_id = p.account_id WHERE p.id=$1 ORDER BY m.added_at LIMIT 1",
            profile_id)

    async def space_of(self, profile_id: str) -> str | None:
        return await self.db.fetchval("SELECT space_mxid FROM profile WHERE id=$1", profile_id)

    async def set_space(self, profile_id: str, space_mxid: str) -> None:
        await self.db.execute("UPDATE profile SET space_mxid=$2 WHERE id=$1",
                              profile_id, space_mxid)

    async def set_space_if_missing(self, profile_id: str, space_mxid: str) -> str | None:
        """Records the space unless one already is; the profile's space either way (None if
        the profile is gone)."""
        await self.db.execute("UPDATE profile SET space_mxid=$2 WHERE id=$1 AND "
                              "space_mxid IS NULL", profile_id, space_mxid)
        return await self.space_of(profile_id)

    async def rename(self, profile_id: str, name: str) -> None:
        await self.db.execute("UPDATE profile SET name=$2 WHERE id=$1", profile_id, name)

    async def delete(self, profile_id: str) -> None:
        await self.db.execute("DELETE FROM profile WHERE id=$1", profile_id)
