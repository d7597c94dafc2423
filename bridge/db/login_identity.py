"""login_identity: (issuer, subject) pairs from sign-in providers. Never keyed by email."""

from __future__ import annotations

import time

import attrs
from mautrix.util.async_db import Database

from .record import Record


@attrs.define
class LoginIdentity:
    issuer: str
    subject: str
    provider_id: str
    account_id: str
    email: str | None
    email_verified: bool
    # True when a provider trusted for emails (config `trust_email`) vouched for the address.
    email_trusted: bool
    added_how: str
    added_at: int = attrs.field(factory=lambda: int(time.time() * 1000))


_COLUMNS = ("issuer, subject, provider_id, account_id, email, email_verified, email_trusted, "
            "added_how, added_at")


def _identity(row: Record) -> LoginIdentity:
    return LoginIdentity(row["issuer"], row["subject"], row["provider_id"], row["account_id"],
                         row["email"], bool(row["email_verified"]), bool(row["email_trusted"]),
                         row["added_how"], row["added_at"])


class LoginIdentityStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, issuer: str, subject: str) -> LoginIdentity | None:
        row = await self.db.fetchrow(
            f"SELECT {_COLUMNS} FROM login_identity WHERE issuer=$1 AND subject=$2",
            issuer, subject,
        )
        return _identity(row) if row else None

    async def add(self, identity: LoginIdentity) -> bool:
        """False if this (issuer, subject) is already linked to an account."""
        added = await self.db.fetchval(
            f"INSERT INTO login_identity ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, "
            "$9) ON CONFLICT (issuer, subject) DO NOTHING RETURNING issuer",
            *attrs.astuple(identity),
        )
        return added is not None

    async def for_account(self, account_id: str) -> list[LoginIdentity]:
        rows = await self.db.fetch(
            f"SELECT {_COLUMNS} FROM login_identity WHERE account_id=$1 ORDER BY added_at",
            account_id,
        )
        return [_identity(row) for row in rows]

    async def accounts_with_email(self, email: str) -> list[str]:
        """Accounts with a sign-in of this address, in any case, verified or not (support
        lookup only: never a reason to let anyone in)."""
        rows = await self.db.fetch(
            "SELECT DISTINCT account_id FROM login_identity WHERE lower(email)=lower($1)",
            email)
        return [row["account_id"] for row in rows]

    async def accounts_with_trusted_email(self, email: str) -> list[str]:
        """Accounts where a trusted provider verified this exact address."""
        rows = await self.db.fetch(
            "SELECT DISTINCT account_id FROM login_identity "
            "WHERE email=$1 AND email_verified AND email_trusted",
            email,
        )
        return [row["account_id"] for row in rows]

    async def remove(self, issuer: str, subject: str) -> None:
        await self.db.execute("DELETE FROM login_identity WHERE issuer=$1 AND subject=$2",
                              issuer, subject)
