"""persona: one linked external account on one network, with the design note's descriptor."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import attrs
from mautrix.util.async_db import Database

from .record import Record


class PersonaStatus(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    READ_ONLY = "read_only"
    NEEDS_REAUTH = "needs_reauth"
    REVOKED = "revoked"


@attrs.define
class Persona:
    id: str
    profile_id: str
    vault_profile: str
    platform: str
    external_user_id: str
    display_name: str | None
    avatar_hash: str | None
    scopes: list[str]
    last_refresh: str | None
    status: PersonaStatus
    created_at: int = attrs.field(factory=lambda: int(time.time() * 1000))

    def descriptor(self) -> dict[str, Any]:
        """The persona descriptor of the design note, as the API returns it."""
        return {
            "platform": self.platform, "external_user_id": self.external_user_id,
            "display_name": self.display_name, "avatar_hash": self.avatar_hash,
            "scopes": list(self.scopes), "last_refresh": self.last_refresh,
        }

    @property
    def vault_ref(self) -> tuple[str, str]:
        """Where its credentials are sealed: (profile, persona) in the vault."""
        return self.vault_profile, self.id


_COLUMNS = ("id, profile_id, vault_profile, platform, external_user_id, display_name, "
            "avatar_hash, scopes, last_refresh, status, created_at")


def _persona(row: Record) -> Persona:
    return Persona(row["id"], row["profile_id"], row["vault_profile"], row["platform"],
                   row["external_user_id"], row["display_name"], row["avatar_hash"],
                   json.loads(row["scopes"]),
                   row["last_refresh"], PersonaStatus(row["status"]), row["created_at"])


class PersonaStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(self, persona: Persona) -> bool:
        """False if this external account is already linked (to anyone)."""
        added = await self.db.fetchval(
            f"INSERT INTO persona ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, "
            "$11) ON CONFLICT (platform, external_user_id) DO NOTHING RETURNING id",
            persona.id, persona.profile_id, persona.vault_profile, persona.platform,
            persona.external_user_id, persona.display_name, persona.avatar_hash,
            json.dumps(persona.scopes),
            persona.last_refresh, persona.status.value, persona.created_at,
        )
        return added is not None

    async def get(self, persona_id: str) -> Persona | None:
        row = await self.db.fetchrow(f"SELECT {_COLUMNS} FROM persona WHERE id=$1", persona_id)
        return _persona(row) if row else None

    async def by_external(self, platform: str, external_user_id: str) -> Persona | None:
        row = await self.db.fetchrow(
            f"SELECT {_COLUMNS} FROM persona WHERE platform=$1 AND external_user_id=$2",
            platform, external_user_id,
        )
        return _persona(row) if row else None

    async def for_profile(self, profile_id: str) -> list[Persona]:
        rows = await self.db.fetch(
            f"SELECT {_COLUMNS} FROM persona WHERE profile_id=$1 ORDER BY created_at", profile_id
        )
        return [_persona(row) for row in rows]

    async def of_account(self, account_id: str, platform: str,
                         statuses: Iterable[PersonaStatus]) -> list[Persona]:
        """The account's personas on `platform` in one of `statuses`, oldest first."""
        wanted = [s.value for s in statuses]
        if not wanted:
            return []
        marks = ", ".join(f"${i}" for i in range(3, 3 + len(wanted)))
        rows = await self.db.fetch(
            f"SELECT {', '.join('pe.' + c for c in _COLUMNS.split(', '))} FROM persona pe "
            "JOIN profile pr ON pr.id = pe.profile_id "
            f"WHERE pr.account_id=$1 AND pe.platform=$2 AND pe.status IN ({marks}) "
            "ORDER BY pe.created_at", account_id, platform, *wanted)
        return [_persona(row) for row in rows]

    async def on_platform(self, platform: str, statuses: Iterable[PersonaStatus]
                          ) -> list[Persona]:
        """Every persona on `platform` in one of `statuses`."""
        wanted = [s.value for s in statuses]
        if not wanted:
            return []
        marks = ", ".join(f"${i}" for i in range(2, 2 + len(wanted)))
        rows = await self.db.fetch(
            f"SELECT {_COLUMNS} FROM persona WHERE platform=$1 AND status IN ({marks})",
            platform, *wanted)
        return [_persona(row) for row in rows]

    async def external_id_of_matrix_user(self, mxid: str, platform: str) -> str | None:
        """The remote id of the Matrix user's oldest persona on `platform`, whatever the
        profile."""
        return await self.db.fetchval(
            "SELECT pe.external_user_id FROM persona pe JOIN profile pr ON pr.id = pe.profile_id "
            "JOIN account_matrix_user m ON m.account_id = pr.account_id "
            "WHERE m.mxid=$1 AND pe.platform=$2 ORDER BY pe.created_at LIMIT 1",
            mxid, platform)

    async def set_checked(self, persona_id: str, *, avatar_hash: str | None = None,
                          at: datetime | None = None) -> None:
        """The credentials were just verified or refreshed (`last_refresh`, ISO 8601 UTC);
        with `avatar_hash`, the network's picture of the account as seen then."""
        when = (at or datetime.now(UTC)).isoformat(timespec="milliseconds")
        if avatar_hash is None:
            await self.db.execute("UPDATE persona SET last_refresh=$2 WHERE id=$1",
                                  persona_id, when)
        else:
            await self.db.execute(
                "UPDATE persona SET last_refresh=$2, avatar_hash=$3 WHERE id=$1",
                persona_id, when, avatar_hash)

    async def set_status(self, persona_id: str, status: PersonaStatus) -> None:
        await self.db.execute("UPDATE persona SET status=$2 WHERE id=$1", persona_id,
                              status.value)

    async def delete(self, persona_id: str) -> None:
        await self.db.execute("DELETE FROM persona WHERE id=$1", persona_id)
