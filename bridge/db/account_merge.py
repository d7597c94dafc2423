"""account_merge: the provenance of every merge, enough to reverse it."""

from __future__ import annotations

import json
import time
from typing import Any

import attrs
from mautrix.util.async_db import Database

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
