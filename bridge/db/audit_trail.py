"""A person's own audit trail, filtered and paged for the portal (read-only)."""

from __future__ import annotations

from typing import Any

from mautrix.util.async_db import Database

from .audit_log import _COLUMNS, AuditRow


class AuditTrailStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def page(self, account_id: str, *, profile_id: str | None = None,
                   network: str | None = None, persona_ids: list[str] | None = None,
                   kind: str | None = None, before: int | None = None, limit: int = 25
                   ) -> list[AuditRow]:
        """The account's records, newest first, older than `before` (a sequence number).
        `network`: records naming it, or about one of `persona_ids` (its linked accounts)."""
        where, args = ["account=$1"], [account_id]

        def arg(value: Any) -> str:
            args.append(value)
            return f"${len(args)}"

        if profile_id:
            where.append(f"profile={arg(profile_id)}")
        if kind:
            where.append(f"event_type={arg(kind)}")
        if before is not None:
            where.append(f"seq<{arg(before)}")
        if network:
            # The details are compact JSON with sorted keys (bridge/audit/log.py).
            platform, named_network = (f'%"{key}":"{network}"%' for key in ("platform",
                                                                             "network"))
            named = [f"details LIKE {arg(platform)}", f"details LIKE {arg(named_network)}"]
            named += [f"persona={arg(p)}" for p in persona_ids or []]
            where.append("(" + " OR ".join(named) + ")")
        rows = await self.db.fetch(
            f"SELECT {_COLUMNS} FROM audit_log WHERE {' AND '.join(where)} "
            f"ORDER BY seq DESC LIMIT {arg(limit)}", *args)
        return [AuditRow(**row) for row in rows]

    async def kinds(self, account_id: str) -> list[str]:
        rows = await self.db.fetch("SELECT DISTINCT event_type FROM audit_log WHERE account=$1",
                                   account_id)
        return sorted(r["event_type"] for r in rows)
