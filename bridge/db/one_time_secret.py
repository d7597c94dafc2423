"""one_time_secret: login links, merge codes, pending choices and web sessions.

Only a SHA-256 of each value is stored, so the table leaks nothing usable. Single-use kinds
are consumed with one conditional UPDATE, so two requests racing with the same value cannot
both succeed.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from typing import Any

import attrs
from mautrix.util.async_db import Database


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@attrs.frozen
class SecretRecord:
    kind: str
    account_id: str | None
    mxid: str | None
    browser: str | None
    payload: dict[str, Any]
    expires_at: int


def key_value(kind: str, key: str) -> str:
    """What a question kept under a known key (`ask`) is hashed from: not a secret, so it is
    named by its kind and key; another kind's value can never be the same."""
    return f"{kind}\0{key}"


class OneTimeSecretStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def issue(self, kind: str, ttl_seconds: float, *, account_id: str | None = None,
                    mxid: str | None = None, browser: str | None = None,
                    payload: dict[str, Any] | None = None, value: str | None = None) -> str:
        value = value or secrets.token_urlsafe(32)
        now = int(time.time() * 1000)
        await self.db.execute(
            "INSERT INTO one_time_secret (hash, kind, account_id, mxid, browser, payload, "
            "created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            digest(value), kind, account_id, mxid, browser, json.dumps(payload or {}), now,
            now + int(ttl_seconds * 1000),
        )
        return value

    async def ask(self, kind: str, key: str, ttl_seconds: float, *, account_id: str | None,
                  mxid: str | None, payload: dict[str, Any]) -> None:
        """Keep the one pending question of its kind for `key` (a Matrix user): a new one
        replaces it, answered or not. Taken once (`answer`) by whichever worker the answer
        reaches."""
        now = int(time.time() * 1000)
        await self.db.execute(
            "INSERT INTO one_time_secret (hash, kind, account_id, mxid, payload, created_at, "
            "expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (hash) DO UPDATE SET "
            "kind=excluded.kind, account_id=excluded.account_id, mxid=excluded.mxid, "
            "browser=NULL, payload=excluded.payload, created_at=excluded.created_at, "
            "expires_at=excluded.expires_at, used_at=NULL",
            digest(key_value(kind, key)), kind, account_id, mxid, json.dumps(payload), now,
            now + int(ttl_seconds * 1000),
        )

    async def answer(self, kind: str, key: str) -> SecretRecord | None:
        """Take the pending question `ask` kept for `key`: None if there is none, it was
        answered already (on any worker) or it lapsed."""
        return await self.consume(kind, key_value(kind, key))

    async def remember(self, kind: str, value: str, ttl_seconds: float) -> bool:
        """Note that a value was seen; False if it was seen before (a replay)."""
        now = int(time.time() * 1000)
        inserted = await self.db.fetchval(
            "INSERT INTO one_time_secret (hash, kind, payload, created_at, expires_at) "
            "VALUES ($1, $2, '{}', $3, $4) ON CONFLICT (hash) DO NOTHING RETURNING hash",
            digest(f"{kind}\0{value}"), kind, now, now + int(ttl_seconds * 1000),
        )
        return inserted is not None

    async def consume(self, kind: str, value: str, *, browser: str | None = None
                      ) -> SecretRecord | None:
        """Use a single-use value: None if unknown, of another kind, expired, already used,
        or (when `browser` is given) issued to another browser."""
        now = int(time.time() * 1000)
        # The browser is part of the condition, not checked afterwards: a value brought by
        # another browser (an attacker's, a link prefetcher's) must stay usable by its own.
        query = ("UPDATE one_time_secret SET used_at=$3 WHERE hash=$1 AND kind=$2 "
                 "AND used_at IS NULL AND expires_at > $3")
        args: list[Any] = [digest(value), kind, now]
        if browser is not None:
            query += " AND browser=$4"
            args.append(browser)
        row = await self.db.fetchrow(
            query + " RETURNING account_id, mxid, browser, payload, expires_at", *args)
        if row is None:
            return None
        return SecretRecord(kind, row["account_id"], row["mxid"], row["browser"],
                            json.loads(row["payload"]), row["expires_at"])

    async def peek(self, kind: str, value: str) -> SecretRecord | None:
        """Read a still-valid value without using it up (web sessions, pending choices)."""
        row = await self.db.fetchrow(
            "SELECT account_id, mxid, browser, payload, expires_at FROM one_time_secret "
            "WHERE hash=$1 AND kind=$2 AND used_at IS NULL AND expires_at > $3",
            digest(value), kind, int(time.time() * 1000),
        )
        if row is None:
            return None
        return SecretRecord(kind, row["account_id"], row["mxid"], row["browser"],
                            json.loads(row["payload"]), row["expires_at"])

    async def revoke(self, kind: str, value: str) -> None:
        """End one value before it expires (a session used from another network)."""
        await self.db.execute(
            "UPDATE one_time_secret SET used_at=$3 WHERE hash=$1 AND kind=$2 AND used_at IS NULL",
            digest(value), kind, int(time.time() * 1000),
        )

    async def revoke_for_account(self, account_id: str, kind: str) -> None:
        await self.db.execute(
            "UPDATE one_time_secret SET used_at=$3 WHERE account_id=$1 AND kind=$2 "
            "AND used_at IS NULL", account_id, kind, int(time.time() * 1000),
        )

    async def prune(self, now_ms: int | None = None) -> int:
        """Forget expired values (nothing reads them: every look-up requires an unexpired
        row); the number removed."""
        now = int(time.time() * 1000) if now_ms is None else now_ms
        # Counted, then deleted (not RETURNING every row: after a flood there can be many).
        removed = await self.db.fetchval(
            "SELECT COUNT(*) FROM one_time_secret WHERE expires_at <= $1", now)
        if removed:
            await self.db.execute("DELETE FROM one_time_secret WHERE expires_at <= $1", now)
        return int(removed or 0)
