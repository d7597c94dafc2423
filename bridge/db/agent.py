"""agent_client, agent_grant, agent_token, agent_act, agent_channel: a person's AI agents.

An agent is one authorisation a person gave one OAuth client (registered with RFC 7591) on
the consent page: which profiles, networks and actions it may use (`agent_grant`). Its
authorisation codes, access and refresh tokens are kept only as SHA-256 digests
(`agent_token`), like one_time_secret; a code or refresh token is spent with one conditional
UPDATE, so two requests racing with the same value cannot both succeed. Each act an agent
asks for is a Matrix event the bridge made (`agent_act`), so the core can tell an agent's act
from the person's own message by its event id, which nobody else can choose.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from typing import Any

import attrs
from mautrix.util.async_db import Database

from .record import Record


def token_digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _now_ms() -> int:
    return int(time.time() * 1000)


def _split(text: str) -> tuple[str, ...]:
    return tuple(v for v in text.split(",") if v)


@attrs.frozen
class AgentGrant:
    id: str
    account_id: str
    client_id: str
    name: str
    actions: tuple[str, ...]
    profile_ids: tuple[str, ...]
    networks: tuple[str, ...]
    created_at: int
    last_used_at: int | None = None
    revoked_at: int | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@attrs.frozen
class AgentTokenRow:
    kind: str  # "code", "access" or "refresh"
    grant_id: str
    client_id: str
    scopes: tuple[str, ...]
    expires_at: int
    used_at: int | None
    payload: dict[str, Any]


_GRANT = ("id, account_id, client_id, name, actions, profile_ids, networks, created_at, "
          "last_used_at, revoked_at")


def _grant(row: Record) -> AgentGrant:
    return AgentGrant(row["id"], row["account_id"], row["client_id"], row["name"],
                      _split(row["actions"]), _split(row["profile_ids"]),
                      _split(row["networks"]), row["created_at"], row["last_used_at"],
                      row["revoked_at"])


class AgentStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # ---- clients (RFC 7591) ------------------------------------------------------------------

    async def add_client(self, client_id: str, metadata: dict[str, Any]) -> None:
        await self.db.execute(
            "INSERT INTO agent_client (client_id, metadata, created_at) VALUES ($1, $2, $3)",
            client_id, json.dumps(metadata), _now_ms())

    async def client(self, client_id: str) -> dict[str, Any] | None:
        raw = await self.db.fetchval("SELECT metadata FROM agent_client WHERE client_id=$1",
                                     client_id)
        return json.loads(raw) if raw is not None else None

    # ---- grants ------------------------------------------------------------------------------

    async def add_grant(self, account_id: str, client_id: str, name: str,
                        actions: list[str], profile_ids: list[str], networks: list[str]
                        ) -> AgentGrant:
        taken = {g.name.lower() for g in await self.grants(account_id)}
        unique, n = name, 2
        while unique.lower() in taken:  # "agents revoke NAME" must name one agent
            unique, n = f"{name} ({n})", n + 1
        grant = AgentGrant(f"agt_{secrets.token_hex(6)}", account_id, client_id, unique,
                           tuple(actions), tuple(profile_ids), tuple(networks), _now_ms())
        await self.db.execute(
            f"INSERT INTO agent_grant ({_GRANT}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, "
            "$10)", grant.id, account_id, client_id, unique, ",".join(actions),
            ",".join(profile_ids), ",".join(networks), grant.created_at, None, None)
        return grant

    async def grant(self, grant_id: str) -> AgentGrant | None:
        row = await self.db.fetchrow(f"SELECT {_GRANT} FROM agent_grant WHERE id=$1",
                                     grant_id)
        return _grant(row) if row else None

    async def grants(self, account_id: str) -> list[AgentGrant]:
        """The account's agents that still work, oldest first."""
        rows = await self.db.fetch(
            f"SELECT {_GRANT} FROM agent_grant WHERE account_id=$1 AND revoked_at IS NULL "
            "ORDER BY created_at", account_id)
        return [_grant(r) for r in rows]

    async def revoke_grant(self, grant_id: str) -> bool:
        """The agent stops at once: its grant and every token it holds."""
        revoked = await self.db.fetchval(
            "UPDATE agent_grant SET revoked_at=$2 WHERE id=$1 AND revoked_at IS NULL "
            "RETURNING id", grant_id, _now_ms())
        await self.db.execute("DELETE FROM agent_token WHERE grant_id=$1", grant_id)
        return revoked is not None

    async def touch(self, grant_id: str) -> None:
        await self.db.execute("UPDATE agent_grant SET last_used_at=$2 WHERE id=$1", grant_id,
                              _now_ms())

    # ---- codes and tokens (only digests are stored) ------------------------------------------

    async def issue(self, kind: str, grant_id: str, client_id: str, scopes: list[str],
                    ttl_seconds: float, payload: dict[str, Any] | None = None,
                    prefix: str = "") -> tuple[str, int]:
        """A new random value of this kind; returns it (shown once) and its expiry (ms)."""
        value = prefix + secrets.token_urlsafe(32)
        expires = _now_ms() + int(ttl_seconds * 1000)
        await self.db.execute(
            "INSERT INTO agent_token (hash, kind, grant_id, client_id, scopes, expires_at, "
            "used_at, payload) VALUES ($1, $2, $3, $4, $5, $6, NULL, $7)",
            token_digest(value), kind, grant_id, client_id, " ".join(scopes), expires,
            json.dumps(payload or {}))
        return value, expires

    async def token(self, kind: str, value: str) -> AgentTokenRow | None:
        """The value's row when it is of this kind and its grant is not revoked (spent and
        expired rows included: the caller tells a replay from a stranger)."""
        row = await self.db.fetchrow(
            "SELECT t.kind, t.grant_id, t.client_id, t.scopes, t.expires_at, t.used_at, "
            "t.payload FROM agent_token t JOIN agent_grant g ON g.id = t.grant_id "
            "WHERE t.hash=$1 AND t.kind=$2 AND g.revoked_at IS NULL",
            token_digest(value), kind)
        if row is None:
            return None
        return AgentTokenRow(row["kind"], row["grant_id"], row["client_id"],
                             tuple(row["scopes"].split()), row["expires_at"], row["used_at"],
                             json.loads(row["payload"]))

    async def spend(self, kind: str, value: str) -> bool:
        """Use a code or refresh token once; False when it was used (or is gone)."""
        spent = await self.db.fetchval(
            "UPDATE agent_token SET used_at=$3 WHERE hash=$1 AND kind=$2 AND used_at IS NULL "
            "AND expires_at > $3 RETURNING hash", token_digest(value), kind, _now_ms())
        return spent is not None

    async def delete_token(self, value: str) -> None:
        await self.db.execute("DELETE FROM agent_token WHERE hash=$1", token_digest(value))

    async def prune(self, act_days: int = 30) -> int:
        """Expired codes and tokens (spent ones stay until they expire, to catch replays),
        and acts older than `act_days` that nothing waits on any more."""
        rows = await self.db.fetch(
            "DELETE FROM agent_token WHERE expires_at <= $1 RETURNING hash", _now_ms())
        # Registration needs no sign-in: clients nobody authorised within a day are dropped.
        await self.db.execute(
            "DELETE FROM agent_client WHERE created_at < $1 AND client_id NOT IN "
            "(SELECT client_id FROM agent_grant)", _now_ms() - 86400 * 1000)
        await self.db.execute(
            "DELETE FROM agent_act WHERE created_at < $1 AND event_id NOT IN "
            "(SELECT event_id FROM outbound) AND event_id NOT IN "
            "(SELECT event_id FROM held_send)", _now_ms() - act_days * 86400 * 1000)
        return len(rows)

    # ---- acts and first sends ----------------------------------------------------------------

    async def record_act(self, event_id: str, grant_id: str, channel: str,
                         event: dict[str, Any]) -> None:
        await self.db.execute(
            "INSERT INTO agent_act (event_id, grant_id, channel, event, created_at) "
            "VALUES ($1, $2, $3, $4, $5)", event_id, grant_id, channel, json.dumps(event),
            _now_ms())

    async def act_grant(self, event_id: str) -> str | None:
        """Which agent asked for this event, or None for anything the person sent."""
        return await self.db.fetchval("SELECT grant_id FROM agent_act WHERE event_id=$1",
                                      event_id)

    async def first_into(self, grant_id: str, channel: str) -> bool:
        seen = await self.db.fetchval(
            "SELECT 1 FROM agent_channel WHERE grant_id=$1 AND channel=$2", grant_id, channel)
        return seen is None

    async def confirmed_event(self, event_id: str) -> dict[str, Any] | None:
        """The person confirmed this held first send in Matrix: an agent's act is its event
        as the bridge made it (the Matrix copy is the bridge's notice), and its agent may
        now write into that channel. None when the event is not an agent's act."""
        row = await self.db.fetchrow(
            "SELECT grant_id, channel, event FROM agent_act WHERE event_id=$1", event_id)
        if row is None:
            return None
        await self.db.execute(
            "INSERT INTO agent_channel (grant_id, channel) VALUES ($1, $2) "
            "ON CONFLICT DO NOTHING", row["grant_id"], row["channel"])
        return json.loads(row["event"])

    async def mark_sent(self, grant_id: str, channel: str) -> None:
        await self.db.execute(
            "INSERT INTO agent_channel (grant_id, channel) VALUES ($1, $2) "
            "ON CONFLICT DO NOTHING", grant_id, channel)

    async def outcome(self, event_id: str) -> tuple[str, str | None]:
        """Where an act stands: sent (with its remote id), held, queued, failed (with the
        reason) or done (handled without a send: refused, with the reason in the room)."""
        remote = await self.db.fetchval("SELECT remote_id FROM message WHERE mxid=$1",
                                        event_id)
        if remote is not None:
            return "sent", remote
        if await self.db.fetchval("SELECT 1 FROM held_send WHERE event_id=$1", event_id):
            return "held", None
        row = await self.db.fetchrow(
            "SELECT state, last_error FROM outbound WHERE event_id=$1", event_id)
        if row is None:
            return "done", None
        return ("failed" if row["state"] == "failed" else row["state"]), row["last_error"]

    # ---- what an agent may read --------------------------------------------------------------

    async def matrix_user(self, account_id: str) -> str | None:
        """The Matrix user an agent's acts are the acts of: the account's first."""
        return await self.db.fetchval(
            "SELECT mxid FROM account_matrix_user WHERE account_id=$1 ORDER BY added_at, mxid "
            "LIMIT 1", account_id)

    async def portals_of(self, account_id: str) -> list[dict[str, Any]]:
        """The account's portal rooms with the profile each belongs to: rooms its mapping
        rules bridge, and direct chats of its personas."""
        mapped = await self.db.fetch(
            "SELECT p.network, p.remote_id, p.mxid, p.name, r.profile_id FROM portal p "
            "JOIN mapping_rule r ON r.id = p.rule_id OR (r.network = p.network "
            "AND r.remote = p.remote_id) "
            "WHERE r.account_id=$1 AND p.mxid IS NOT NULL", account_id)
        direct = await self.db.fetch(
            "SELECT p.network, p.remote_id, p.mxid, p.name, pe.profile_id FROM portal p "
            "JOIN persona pe ON pe.id = p.receiver JOIN profile pr ON pr.id = pe.profile_id "
            "WHERE pr.account_id=$1 AND p.mxid IS NOT NULL", account_id)
        seen: dict[str, dict[str, Any]] = {}
        for row in [*mapped, *direct]:
            seen.setdefault(row["mxid"], dict(row))
        return sorted(seen.values(), key=lambda r: (r["network"], r["remote_id"]))
