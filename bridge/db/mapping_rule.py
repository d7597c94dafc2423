"""mapping_rule: in profile P, remote room R on network N goes to the profile's space (or a
given Matrix room), both ways or inbound only."""

from __future__ import annotations

import time

import attrs
from mautrix.util.async_db import Database

from .record import Record


@attrs.define
class MappingRule:
    id: str
    account_id: str
    profile_id: str
    network: str
    remote: str
    target_room: str | None
    inbound_only: bool
    relay: bool
    created_at: int = attrs.field(factory=lambda: int(time.time() * 1000))


_COLUMNS = ("id, account_id, profile_id, network, remote, target_room, inbound_only, relay, "
            "created_at")


def _rule(row: Record) -> MappingRule:
    return MappingRule(row["id"], row["account_id"], row["profile_id"], row["network"],
                       row["remote"], row["target_room"], bool(row["inbound_only"]),
                       bool(row["relay"]), row["created_at"])


class MappingRuleStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(self, rule: MappingRule) -> bool:
        added = await self.db.fetchval(
            f"INSERT INTO mapping_rule ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) "
            "ON CONFLICT (profile_id, network, remote) DO NOTHING RETURNING id",
            *attrs.astuple(rule))
        return added is not None

    async def for_account(self, account_id: str) -> list[MappingRule]:
        rows = await self.db.fetch(
            f"SELECT {_COLUMNS} FROM mapping_rule WHERE account_id=$1 ORDER BY created_at",
            account_id)
        return [_rule(r) for r in rows]

    async def for_remote(self, network: str, remote: str) -> list[MappingRule]:
        rows = await self.db.fetch(
            f"SELECT {_COLUMNS} FROM mapping_rule WHERE network=$1 AND remote=$2 "
            "ORDER BY created_at", network, remote)
        return [_rule(r) for r in rows]

    async def for_profile_network(self, profile_id: str, network: str) -> list[MappingRule]:
        rows = await self.db.fetch(
            f"SELECT {_COLUMNS} FROM mapping_rule WHERE profile_id=$1 AND network=$2 "
            "ORDER BY created_at", profile_id, network)
        return [_rule(r) for r in rows]

    async def all(self) -> list[MappingRule]:
        rows = await self.db.fetch(f"SELECT {_COLUMNS} FROM mapping_rule ORDER BY created_at")
        return [_rule(r) for r in rows]

    async def delete(self, rule_id: str) -> None:
        await self.db.execute("DELETE FROM mapping_rule WHERE id=$1", rule_id)
