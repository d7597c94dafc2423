"""web_session_seen: which browser each web session is, from where, and when it was last used.

The sessions themselves are `web_session` rows of one_time_secret (only a hash of the cookie
is stored there); this table adds what a person needs to recognise one in the portal. A
session's public id is the first 16 hex digits of that hash: enough to name it, useless as a
cookie.
"""

from __future__ import annotations

import time

import attrs
from mautrix.util.async_db import Database

from .one_time_secret import digest

PUBLIC_ID_LENGTH = 16
# A user agent is shown, never parsed for anything that matters: bounded.
MAX_USER_AGENT = 300


@attrs.frozen
class WebSession:
    public_id: str
    created_at: int
    expires_at: int
    user_agent: str | None
    network: str | None
    last_seen: int | None


def public_id(session_value: str) -> str:
    return digest(session_value)[:PUBLIC_ID_LENGTH]


def _now() -> int:
    return int(time.time() * 1000)


class WebSessionStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def touch(self, session_value: str, account_id: str, user_agent: str,
                    network: str | None, expires_at: int) -> None:
        """Record a use of the session (at most one write a minute per session)."""
        now, key = _now(), digest(session_value)
        agent = user_agent[:MAX_USER_AGENT]
        await self.db.execute(
            "INSERT INTO web_session_seen (hash, account_id, user_agent, network, first_seen, "
            "last_seen, expires_at) VALUES ($1, $2, $3, $4, $5, $5, $6) "
            "ON CONFLICT (hash) DO UPDATE SET user_agent=excluded.user_agent, "
            "network=excluded.network, last_seen=excluded.last_seen "
            "WHERE web_session_seen.last_seen < $7",
            key, account_id, agent, network, now, expires_at, now - 60_000)

    async def prune(self) -> None:
        """Forget what was noted of sessions that expired."""
        await self.db.execute("DELETE FROM web_session_seen WHERE expires_at <= $1", _now())

    async def for_account(self, account_id: str) -> list[WebSession]:
        """The account's sessions that still work, newest use first."""
        now = _now()
        rows = await self.db.fetch(
            "SELECT s.hash, s.created_at, s.expires_at, w.user_agent, w.network, w.last_seen "
            "FROM one_time_secret s LEFT JOIN web_session_seen w ON w.hash = s.hash "
            "WHERE s.kind='web_session' AND s.account_id=$1 AND s.used_at IS NULL "
            "AND s.expires_at > $2", account_id, now)
        sessions = [WebSession(r["hash"][:PUBLIC_ID_LENGTH], r["created_at"], r["expires_at"],
                               r["user_agent"], r["network"], r["last_seen"]) for r in rows]
        return sorted(sessions, key=lambda s: s.last_seen or s.created_at, reverse=True)

    async def end(self, account_id: str, public: str) -> bool:
        """End one of the account's sessions by its public id; False if there is none."""
        if len(public) != PUBLIC_ID_LENGTH:
            return False
        ended = await self.db.fetchval(
            "UPDATE one_time_secret SET used_at=$3 WHERE kind='web_session' AND account_id=$1 "
            "AND substr(hash, 1, 16)=$2 AND used_at IS NULL RETURNING hash",
            account_id, public, _now())
        return ended is not None

    async def end_all(self, account_id: str) -> None:
        await self.db.execute(
            "UPDATE one_time_secret SET used_at=$2 WHERE kind='web_session' AND account_id=$1 "
            "AND used_at IS NULL", account_id, _now())
