"""mfa_factor: where a person's TOTP enrolment stands. The secret itself is in the vault."""

from __future__ import annotations

import attrs
from mautrix.util.async_db import Database


@attrs.frozen
class MfaFactor:
    account_id: str
    enrolled_at: int | None
    pending_since: int | None
    last_step: int
    verified_at: int | None


class MfaFactorStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, account_id: str) -> MfaFactor | None:
        row = await self.db.fetchrow(
            "SELECT account_id, enrolled_at, pending_since, last_step, verified_at "
            "FROM mfa_factor WHERE account_id=$1", account_id)
        return MfaFactor(**row) if row else None

    async def start_enrolment(self, account_id: str, now: int) -> None:
        await self.db.execute(
            "INSERT INTO mfa_factor (account_id, pending_since, last_step) VALUES ($1, $2, 0) "
            "ON CONFLICT (account_id) DO UPDATE SET pending_since=$2", account_id, now)

    async def expire_check(self, account_id: str) -> None:
        """A passed check no longer counts as fresh (after an anomaly)."""
        await self.db.execute("UPDATE mfa_factor SET verified_at=NULL WHERE account_id=$1",
                              account_id)

    async def use_step(self, account_id: str, step: int, now: int, *, enrol: bool) -> bool:
        """Record a passed check at this time-step; False if this step (or a later one) was
        used already. One conditional UPDATE, so two racing uses of a code cannot both pass."""
        enrolled = ", enrolled_at=$3, pending_since=NULL" if enrol else ""
        used = await self.db.fetchval(
            f"UPDATE mfa_factor SET last_step=$2, verified_at=$3{enrolled} "
            "WHERE account_id=$1 AND last_step < $2 RETURNING account_id",
            account_id, step, now)
        return used is not None
