"""Merging two accounts a person has proven they own, and reversing it from the tombstone."""

from __future__ import annotations

import json

import attrs

from ..audit import AuditEvent, AuditLog
from ..db import Storage
from ..db.account import AccountStatus
from .accounts import new_id
from .errors import IdentityError


@attrs.frozen
class MergeResult:
    merge_id: str
    credits_merged: int
    providers_added: list[str]


class Merges:
    def __init__(self, storage: Storage, audit: AuditLog) -> None:
        self.storage = storage
        self.audit = audit

    async def merge(self, into_id: str, from_id: str, *, actor: str) -> MergeResult:
        """Move everything of `from_id` into `into_id`; `from_id` becomes a tombstone.

        Matrix users, login identities, profiles, personas and credits move; profiles with the
        same name become one. All in one transaction: a merge happens whole or not at all.
        """
        if into_id == from_id:
            raise IdentityError("Both sign-ins belong to the same account: nothing to merge.")
        into = await self.storage.accounts.get(into_id)
        source = await self.storage.accounts.get(from_id)
        for account in (into, source):
            if account is None or account.status != AccountStatus.ACTIVE:
                raise IdentityError("One of the accounts no longer exists or was merged "
                                    "already.")
        assert into is not None and source is not None
        db = self.storage.db
        merge_id = new_id("merge")
        async with db.acquire() as conn, conn.transaction():
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
                               into_id, source.credits)
            await conn.execute(
                "UPDATE account SET status=$2, merged_into=$3, credits=0 WHERE id=$1",
                from_id, AccountStatus.MERGED.value, into_id)
            moved = {"matrix_users": mxids, "identities": [list(i[:2]) for i in identities],
                     "profiles_moved": moved_profiles, "profiles_merged": merged_profiles,
                     "credits": source.credits}
            await conn.execute(
                "INSERT INTO account_merge (id, from_account, into_account, actor, moved, "
                "merged_at) VALUES ($1, $2, $3, $4, $5, $6)",
                merge_id, from_id, into_id, actor, json.dumps(moved),
                self.storage.merges.now())
        providers = sorted({provider for _, _, provider in identities})
        await self.audit.append(AuditEvent.MERGE, actor=actor, account=into_id,
                                details={"merge_id": merge_id, "from_account": from_id,
                                         "credits": source.credits,
                                         "providers": ",".join(providers)})
        return MergeResult(merge_id, source.credits, providers)

    async def reverse(self, merge_id: str, *, actor: str) -> None:
        """Undo a merge from the tombstone's provenance (support tool)."""
        record = await self.storage.merges.get(merge_id)
        if record is None:
            raise IdentityError(f"There is no merge {merge_id}.")
        if record.reversed_at is not None:
            raise IdentityError(f"Merge {merge_id} was already reversed.")
        moved, source, into = record.moved, record.from_account, record.into_account
        db = self.storage.db
        async with db.acquire() as conn, conn.transaction():
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
                               "WHERE id=$1", merge_id, self.storage.merges.now(), actor)
        await self.audit.append(AuditEvent.ADMIN_ACTION, actor=actor, account=into,
                                details={"what": "merge_reversed", "merge_id": merge_id,
                                         "restored_account": source})
