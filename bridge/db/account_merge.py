"""account_merge: the provenance of every merge, enough to reverse it."""

from __future__ import annotations

import json
import time
from typing import Any

import attrs
from mautrix.util.async_db import Database

from .account import AccountStatus
from .record import Record


@attrs.define
class MergeRecord:
    id: str
    from_account: str
    into_account: str
    actor: str
    moved: dict[str, Any]
    merged_at: int
    reversed_at: int | None = None
    reversed_by: str | None = None


def _merge(row: Record) -> MergeRecord:
    return MergeRecord(row["id"], row["from_account"], row["into_account"], row["actor"],
                       json.loads(row["moved"]), row["merged_at"], row["reversed_at"],
                       row["reversed_by"])


class MergeStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, merge_id: str) -> MergeRecord | None:
        row = await self.db.fetchrow("SELECT * FROM account_merge WHERE id=$1", merge_id)
        return _merge(row) if row else None

    async def involving(self, account_id: str) -> list[MergeRecord]:
        rows = await self.db.fetch(
            "SELECT * FROM account_merge WHERE from_account=$1 OR into_account=$1 "
            "ORDER BY merged_at", account_id,
        )
        return [_merge(row) for row in rows]

    @staticmethod
    def now() -> int:
        return int(time.time() * 1000)

    async def merge(self, merge_id: str, into_id: str, from_id: str, *, credits: int,
                    actor: str) -> tuple[MergeRecord, list[str]]:
        """Move everything of `from_id` into `into_id` and leave `from_id` a tombstone, in one
        transaction: Matrix users, login identities, profiles (those with a name `into_id`
        has already become one: their personas move) and `credits`. Returns the provenance
        kept to reverse it, and the sign-in providers of the identities that moved."""
        async with self.db.acquire() as conn, conn.transaction():
            mxids = [r["mxid"] for r in await conn.fetch(
                "SELECT mxid FROM account_matrix_user WHERE account_id=$1", from_id)]
            identities = [(r["issuer"], r["subject"], r["provider_id"]) for r in await conn.fetch(
                "SELECT issuer, subject, provider_id FROM login_identity WHERE account_id=$1",
                from_id)]
            into_profiles = {r["name"].lower(): r["id"] for r in await conn.fetch(
                "SELECT id, name FROM profile WHERE account_id=$1", into_id)}
            moved_profiles, merged_profiles = [], {}
            for row in await conn.fetch("SELECT id, name FROM profile WHERE account_id=$1",
                                        from_id):
                target = into_profiles.get(row["name"].lower())
                if target is None:
                    await conn.execute("UPDATE profile SET account_id=$2 WHERE id=$1",
                                       row["id"], into_id)
                    moved_profiles.append(row["id"])
                    continue
                personas = [r["id"] for r in await conn.fetch(
                    "SELECT id FROM persona WHERE profile_id=$1", row["id"])]
                await conn.execute("UPDATE persona SET profile_id=$2 WHERE profile_id=$1",
                                   row["id"], target)
                merged_profiles[row["id"]] = {"into": target, "personas": personas}
            await conn.execute("UPDATE account_matrix_user SET account_id=$2 WHERE account_id=$1",
                               from_id, into_id)
            await conn.execute("UPDATE login_identity SET account_id=$2 WHERE account_id=$1",
                               from_id, into_id)
            await conn.execute("UPDATE account SET credits=credits+$2 WHERE id=$1",
                               into_id, credits)
            await conn.execute(
                "UPDATE account SET status=$2, merged_into=$3, credits=0 WHERE id=$1",
                from_id, AccountStatus.MERGED.value, into_id)
            moved = {"matrix_users": mxids, "identities": [list(i[:2]) for i in identities],
                     "profiles_moved": moved_profiles, "profiles_merged": merged_profiles,
                     "credits": credits}
            record = MergeRecord(merge_id, from_id, into_id, actor, moved, self.now())
            await conn.execute(
                "INSERT INTO account_merge (id, from_account, into_account, actor, moved, "
                "merged_at) VALUES ($1, $2, $3, $4, $5, $6)",
                merge_id, from_id, into_id, actor, json.dumps(moved), record.merged_at)
        return record, sorted({provider for _, _, provider in identities})

    async def reverse(self, record: MergeRecord, *, actor: str) -> None:
        """Undo a merge from its provenance, in one transaction: only what still sits where
        the merge put it moves back."""
        moved, source, into = record.moved, record.from_account, record.into_account
        async with self.db.acquire() as conn, conn.transaction():
            for mxid in moved["matrix_users"]:
                await conn.execute("UPDATE account_matrix_user SET account_id=$2 "
                                   "WHERE mxid=$1 AND account_id=$3", mxid, source, into)
            for issuer, subject in moved["identities"]:
                await conn.execute("UPDATE login_identity SET account_id=$3 WHERE issuer=$1 "
                                   "AND subject=$2 AND account_id=$4", issuer, subject, source,
                                   into)
            for profile_id in moved["profiles_moved"]:
                await conn.execute("UPDATE profile SET account_id=$2 WHERE id=$1 "
                                   "AND account_id=$3", profile_id, source, into)
            for profile_id, merged in moved["profiles_merged"].items():
                for persona_id in merged["personas"]:
                    await conn.execute("UPDATE persona SET profile_id=$2 WHERE id=$1 "
                                       "AND profile_id=$3", persona_id, profile_id,
                                       merged["into"])
            await conn.execute("UPDATE account SET credits=credits-$2 WHERE id=$1", into,
                               moved["credits"])
            await conn.execute("UPDATE account SET status=$2, merged_into=NULL, credits=$3 "
                               "WHERE id=$1", source, AccountStatus.ACTIVE.value,
                               moved["credits"])
            await conn.execute("UPDATE account_merge SET reversed_at=$2, reversed_by=$3 "
                               "WHERE id=$1", record.id, self.now(), actor)
