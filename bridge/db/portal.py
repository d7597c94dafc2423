"""portal: a remote room and the Matrix room that mirrors it."""

from __future__ import annotations

import time

import attrs
from mautrix.types import RoomID
from mautrix.util.async_db import Database


@attrs.define
class Portal:
    network: str
    remote_id: str
    mxid: RoomID | None
    name: str | None
    created_at: int


class PortalStore:
    _columns = "network, remote_id, mxid, name, created_at"

    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, network: str, remote_id: str) -> Portal | None:
        row = await self.db.fetchrow(
            f"SELECT {self._columns} FROM portal WHERE network=$1 AND remote_id=$2",
            network, remote_id,
        )
        return Portal(**row) if row else None

    async def get_by_mxid(self, mxid: RoomID) -> Portal | None:
        row = await self.db.fetchrow(
            f"SELECT {self._columns} FROM portal WHERE mxid=$1", mxid
        )
        return Portal(**row) if row else None

    async def insert(self, network: str, remote_id: str, mxid: RoomID, name: str | None
                     ) -> Portal:
        portal = Portal(network, remote_id, mxid, name, int(time.time() * 1000))
        await self.db.execute(
            f"INSERT INTO portal ({self._columns}) VALUES ($1, $2, $3, $4, $5)",
            *attrs.astuple(portal),
        )
        return portal

    async def set_name(self, network: str, remote_id: str, name: str | None) -> None:
        await self.db.execute(
            "UPDATE portal SET name=$3 WHERE network=$1 AND remote_id=$2", network, remote_id, name
        )
