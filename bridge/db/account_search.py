"""Support search over accounts (the admin dashboard): partial, case-insensitive, bounded.

Reads account, account_matrix_user and login_identity, and the display names the homeserver
sent the bridge (mautrix's mx_user_profile), to name the people in a merge's history.
"""

from __future__ import annotations

from mautrix.util.async_db import Database

MAX_QUERY = 255


def like_pattern(text: str) -> str:
    """`text` anywhere in a value, with LIKE's wildcards in it taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class AccountSearchStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def search(self, text: str, limit: int) -> tuple[list[str], bool]:
        """Accounts whose id, a Matrix user (localpart or whole ID) or a sign-in email holds
        `text`, in any case; newest first, at most `limit`, and whether there were more."""
        pattern = like_pattern(text.strip().lower())
        rows = await self.db.fetch(
            "SELECT id FROM account WHERE id IN ("
            " SELECT id FROM account WHERE lower(id) LIKE $1 ESCAPE '\\'"
            " UNION SELECT account_id FROM account_matrix_user"
            "  WHERE lower(mxid) LIKE $1 ESCAPE '\\'"
            " UNION SELECT account_id FROM login_identity"
            "  WHERE lower(email) LIKE $1 ESCAPE '\\'"
            ") ORDER BY created_at DESC, id LIMIT $2",
            pattern, limit + 1,
        )
        found = [row["id"] for row in rows]
        return found[:limit], len(found) > limit

    async def display_names(self, mxids: list[str]) -> dict[str, str]:
        """The display name each Matrix user last showed in a room the bridge is in (their
        management room with the bot, at least), for those that have one."""
        names: dict[str, str] = {}
        for mxid in dict.fromkeys(mxids):
            name = await self.db.fetchval(
                "SELECT displayname FROM mx_user_profile WHERE user_id=$1 "
                "AND displayname IS NOT NULL AND displayname<>'' ORDER BY room_id LIMIT 1",
                mxid,
            )
            if name:
                names[mxid] = name
        return names
