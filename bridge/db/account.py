"""account and account_matrix_user: the person, and the Matrix users that are theirs."""

from __future__ import annotations

import time
from enum import StrEnum

import attrs
from mautrix.util.async_db import Database

from .record import Record


class AccountStatus(StrEnum):
    ACTIVE = "active"
    MERGED = "merged"  # a tombstone: everything moved into `merged_into`


@attrs.define
class Account:
    id: str
    status: AccountStatus
    credits: int
    merged_into: str | None
    created_at: int


def _account(row: Record) -> Account:
    return Account(row["id"], AccountStatus(row["status"]), row["credits"],
                   row["merged_into"], row["created_at"])


class AccountStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, account_id: str, credits: int = 0) -> Account:
        account = Account(account_id, AccountStatus.ACTIVE, credits, None,
                          int(time.time() * 1000))
        await self.db.execute(
            "INSERT INTO account (id, status, credits, merged_into, created_at) "
            "VALUES ($1, $2, $3, $4, $5)",
            account.id, account.status.value, account.credits, None, account.created_at,
        )
        return account

    async def get(self, account_id: str) -> Account | None:
        row = await self.db.fetchrow("SELECT * FROM account WHERE id=$1", account_id)
        return _account(row) if row else None

    async def by_mxid(self, mxid: str) -> Account | None:
        row = await self.db.fetchrow(
            "SELECT a.* FROM account a JOIN account_matrix_user m ON m.account_id=a.id "
            "WHERE m.mxid=$1", mxid,
        )
        return _account(row) if row else None

    async def add_matrix_user(self, account_id: str, mxid: str) -> bool:
        """Attach a Matrix user; False if it already belongs to an account."""
        added = await self.db.fetchval(
            "INSERT INTO account_matrix_user (mxid, account_id, added_at) VALUES ($1, $2, $3) "
            "ON CONFLICT (mxid) DO NOTHING RETURNING mxid",
            mxid, account_id, int(time.time() * 1000),
        )
        return added is not None

    async def matrix_users(self, account_id: str) -> list[str]:
        rows = await self.db.fetch(
            "SELECT mxid FROM account_matrix_user WHERE account_id=$1 ORDER BY added_at, mxid",
            account_id,
        )
        return [row["mxid"] for row in rows]

    async def set_credits(self, account_id: str, credits: int) -> None:
        await self.db.execute("UPDATE account SET credits=$2 WHERE id=$1", account_id, credits)

    async def delete(self, account_id: str) -> None:
        await self.db.execute("DELETE FROM account WHERE id=$1", account_id)
