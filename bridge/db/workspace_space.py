"""workspace_space: the Matrix sub-space a profile has for one workspace of a network (a
Discord server, a Slack team), a child of the profile's space."""

from __future__ import annotations

from mautrix.util.async_db import Database


class WorkspaceSpaceStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, profile_id: str, network: str, workspace: str) -> str | None:
        return await self.db.fetchval(
            "SELECT space_mxid FROM workspace_space WHERE profile_id=$1 AND network=$2 "
            "AND workspace=$3", profile_id, network, workspace)

    async def add(self, profile_id: str, network: str, workspace: str, space_mxid: str) -> str:
        """Record the sub-space; when one was recorded meanwhile, that one stays and is
        returned (so a profile never gets two spaces for one workspace)."""
        await self.db.execute(
            "INSERT INTO workspace_space (profile_id, network, workspace, space_mxid) "
            "VALUES ($1, $2, $3, $4) ON CONFLICT (profile_id, network, workspace) DO NOTHING",
            profile_id, network, workspace, space_mxid)
        return await self.get(profile_id, network, workspace) or space_mxid
