"""puppet: a remote user and the Matrix ghost that speaks for them."""

from __future__ import annotations

import attrs
from mautrix.types import UserID
from mautrix.util.async_db import Database


@attrs.define
class Puppet:
    network: str
    remote_id: str
    mxid: UserID
    displayname: str | None = None
    avatar_url: str | None = None
    # SHA-256 of the remote avatar the ghost shows, so it is uploaded again only on change.
    avatar_hash: str | None = None


class PuppetStore:
    _columns = "network, remote_id, mxid, displayname, avatar_url, avatar_hash"

    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, network: str, remote_id: str) -> Puppet | None:
        row = await self.db.fetchrow(
            f"SELECT {self._columns} FROM puppet WHERE network=$1 AND remote_id=$2",
            network, remote_id,
        )
        return Puppet(**row) if row else None

    async def get_by_mxid(self, mxid: UserID) -> Puppet | None:
        row = await self.db.fetchrow(f"SELECT {self._columns} FROM puppet WHERE mxid=$1", mxid)
        return Puppet(**row) if row else None

    async def upsert(self, puppet: Puppet) -> None:
        await self.db.execute(
            f"INSERT INTO puppet ({self._columns}) VALUES ($1, $2, $3, $4, $5, $6) "
            "ON CONFLICT (network, remote_id) DO UPDATE "
            "SET displayname=excluded.displayname, avatar_url=excluded.avatar_url, "
            "avatar_hash=excluded.avatar_hash",
            *attrs.astuple(puppet),
        )
