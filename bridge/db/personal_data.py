"""What the bridge holds about one person, across tables: found for `my-data`, erased for
`forget-me` (the logic is in `bridge.compliance`). Held archive rows (`held_*`) and the
audit log are never touched here: holds keep the first, pseudonymisation rewrites the second.
"""

from __future__ import annotations

import attrs
from mautrix.util.async_db import Database, Scheme


@attrs.frozen
class ErasurePlan:
    """Everything of one person to delete. `accounts` lists accounts merged into theirs
    before their own (each refers to the next by `merged_into`)."""

    accounts: tuple[str, ...]
    profiles: tuple[str, ...]
    personas: tuple[str, ...]
    matrix_users: tuple[str, ...]
    #: their personas as remote users: (network, remote id) of their puppets, and the ghosts'
    #: Matrix IDs
    puppets: tuple[tuple[str, str], ...] = ()
    ghosts: tuple[str, ...] = ()
    #: their management rooms: the cached Matrix state of these goes too (the bot leaves)
    rooms: tuple[str, ...] = ()


# (table, column) pairs deleted for each kind of identifier, children before parents.
_BY_PERSONA = (("send_channel", "persona_id"), ("held_send", "persona_id"),
               ("sync_state", "persona_id"), ("outbound", "persona_id"),
               ("security_failure", "persona_id"))
_BY_USER = (("held_send", "sender"), ("outbound", "sender"), ("message", "sender_mxid"),
            ("management_room", "user_mxid"), ("one_time_secret", "mxid"),
            ("mx_user_profile", "user_id"))
_BY_PROFILE = (("capability", "profile_id"), ("mapping_rule", "profile_id"),
               ("workspace_space", "profile_id"), ("persona", "profile_id"))
_BY_ACCOUNT = (("capability", "account_id"), ("mapping_rule", "account_id"),
               ("mfa_factor", "account_id"), ("security_failure", "account_id"),
               ("session_network", "account_id"), ("one_time_secret", "account_id"),
               ("web_session_seen", "account_id"),
               ("login_identity", "account_id"), ("account_matrix_user", "account_id"),
               ("account_merge", "from_account"), ("account_merge", "into_account"))


class PersonalDataStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def merged_into(self, account_id: str) -> list[str]:
        """Accounts merged into this one, directly or through others (deepest first)."""
        found: list[str] = []
        todo = [account_id]
        while todo:
            rows = await self.db.fetch("SELECT id FROM account WHERE merged_into=$1",
                                       todo.pop())
            for row in rows:
                if row["id"] not in found:
                    found.insert(0, row["id"])
                    todo.append(row["id"])
        return found

    async def erase(self, plan: ErasurePlan) -> int:
        """Delete every row of the plan in one transaction; returns how many went."""
        removed = 0
        async with self.db.acquire() as conn, conn.transaction():
            if self.db.scheme == Scheme.SQLITE:
                # Deleted rows are overwritten in the file, not left in free pages.
                await conn.execute("PRAGMA secure_delete = ON")

            async def delete(sql: str, *args: object) -> None:
                nonlocal removed
                removed += len(await conn.fetch(f"{sql} RETURNING 1", *args))

            for grant in await conn.fetch(
                    "SELECT id FROM agent_grant WHERE account_id IN "
                    f"({', '.join(f'${i + 1}' for i in range(len(plan.accounts)))})",
                    *plan.accounts) if plan.accounts else []:
                for table in ("agent_token", "agent_act", "agent_channel"):
                    await delete(f"DELETE FROM {table} WHERE grant_id=$1", grant["id"])
                await delete("DELETE FROM agent_grant WHERE id=$1", grant["id"])
            for persona in plan.personas:
                for table, column in _BY_PERSONA:
                    await delete(f"DELETE FROM {table} WHERE {column}=$1", persona)
                # Their direct chats (the portal rows; the Matrix rooms stay) and maps.
                for portal in await conn.fetch(
                        "SELECT network, remote_id FROM portal WHERE receiver=$1", persona):
                    await delete("DELETE FROM message WHERE network=$1 AND remote_room=$2",
                                 portal["network"], portal["remote_id"])
                    await delete("DELETE FROM portal WHERE network=$1 AND remote_id=$2",
                                 portal["network"], portal["remote_id"])
            for mxid in (*plan.matrix_users, *plan.ghosts):
                for table, column in _BY_USER:
                    await delete(f"DELETE FROM {table} WHERE {column}=$1", mxid)
            for room in plan.rooms:
                for table in ("mx_user_profile", "mx_room_state"):
                    await delete(f"DELETE FROM {table} WHERE room_id=$1", room)
            for network, remote_id in plan.puppets:
                await delete("DELETE FROM puppet WHERE network=$1 AND remote_id=$2",
                             network, remote_id)
            for profile in plan.profiles:
                for table, column in _BY_PROFILE:
                    await delete(f"DELETE FROM {table} WHERE {column}=$1", profile)
            for account in plan.accounts:
                for table, column in _BY_ACCOUNT:
                    await delete(f"DELETE FROM {table} WHERE {column}=$1", account)
                await delete("DELETE FROM profile WHERE account_id=$1", account)
            for account in plan.accounts:
                await delete("DELETE FROM account WHERE id=$1", account)
            if self.db.scheme == Scheme.SQLITE:
                await conn.execute("PRAGMA secure_delete = OFF")
        return removed
