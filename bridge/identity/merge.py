"""Merging two accounts a person has proven they own, and reversing it from the tombstone."""

from __future__ import annotations

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
        record, providers = await self.storage.merges.merge(
            new_id("merge"), into_id, from_id, credits=source.credits, actor=actor)
        merge_id = record.id
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
        await self.storage.merges.reverse(record, actor=actor)
        source, into = record.from_account, record.into_account
        await self.audit.append(AuditEvent.ADMIN_ACTION, actor=actor, account=into,
                                details={"what": "merge_reversed", "merge_id": merge_id,
                                         "restored_account": source})
