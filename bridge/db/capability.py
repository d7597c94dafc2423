"""capability: what a person allows the bridge to do as them, per profile (or persona)."""

from __future__ import annotations

import time

import attrs
from mautrix.util.async_db import Database

from .record import Record


@attrs.frozen
class CapabilityRule:
    id: str
    account_id: str
    profile_id: str
    # None: every persona of the profile; otherwise only this one.
    persona_id: str | None
    effect: str  # "allow" or "deny"
    actions: tuple[str, ...]
    network: str
    # fnmatch patterns; "*" matches everything, including "no workspace".
    workspace: str
    channel: str
    created_at: int = attrs.field(factory=lambda: int(time.time() * 1000))
    # None: the person and all their agents; otherwise only that agent (by its name).
    agent: str | None = None


_COLUMNS = ("id, account_id, profile_id, persona_id, effect, actions, network, workspace, "
            "channel, created_at, agent")


def _rule(row: Record) -> CapabilityRule:
    return CapabilityRule(row["id"], row["account_id"], row["profile_id"], row["persona_id"],
                          row["effect"], tuple(row["actions"].split(",")), row["network"],
                          row["workspace"], row["channel"], row["created_at"], row["agent"])


class CapabilityStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(self, rule: CapabilityRule) -> None:
        await self.db.execute(
            f"INSERT INTO capability ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, "
            "$10, $11)", rule.id, rule.account_id, rule.profile_id, rule.persona_id,
            rule.effect, ",".join(rule.actions), rule.network, rule.workspace, rule.channel,
            rule.created_at, rule.agent)

    async def for_account(self, account_id: str) -> list[CapabilityRule]:
        rows = await self.db.fetch(
            f"SELECT {_COLUMNS} FROM capability WHERE account_id=$1 ORDER BY created_at",
            account_id)
        return [_rule(r) for r in rows]

    async def for_profile_network(self, profile_id: str, network: str
                                  ) -> list[CapabilityRule]:
        rows = await self.db.fetch(
            f"SELECT {_COLUMNS} FROM capability WHERE profile_id=$1 AND network=$2 "
            "ORDER BY created_at", profile_id, network)
        return [_rule(r) for r in rows]

    async def delete(self, account_id: str, rule_id: str) -> CapabilityRule | None:
        row = await self.db.fetchrow(
            f"DELETE FROM capability WHERE id=$1 AND account_id=$2 RETURNING {_COLUMNS}",
            rule_id, account_id)
        return _rule(row) if row else None
