"""outbound: Matrix events waiting to be sent to a remote network, in order per room.

A row is written before the appservice transaction that carried the event is acknowledged,
and deleted only after the send was recorded in the message map: a crash at any point leaves
either the row or the finished send. A row is marked in flight just before the connector is
called; one still marked when its turn comes again may have reached the network before a
crash, so it is looked up there (`Connector.find_sent`) before it is sent again.
"""

from __future__ import annotations

import json
import time
from enum import StrEnum
from typing import Any

import attrs
from mautrix.util.async_db import Database

from .message import BEFORE_RELAYING
from .sqlite_conn import on_the_loop


class OutboundState(StrEnum):
    QUEUED = "queued"  # waiting for its turn or for its next attempt
    PARKED = "parked"  # its persona must be relinked first; kept in order, not lost
    FAILED = "failed"  # gave up; the person was told and can `retry`


@attrs.define
class OutboundRow:
    seq: int
    event_id: str
    room_mxid: str
    network: str
    remote_room: str
    sender: str
    event: dict[str, Any]
    state: OutboundState
    persona_id: str | None
    attempts: int
    next_attempt: int
    created_at: int
    last_error: str | None
    # When an attempt last called the connector without an outcome being recorded since.
    in_flight_at: int | None = None
    # Only on a row just written (`add`): whether the event was relayed before, and which
    # agent asked for it (`MessageStore.before_relaying`).
    before_relaying: tuple[bool, str | None] | None = None

    @property
    def in_flight(self) -> bool:
        return self.in_flight_at is not None


def _now_ms() -> int:
    return int(time.time() * 1000)


def _row(record: Any) -> OutboundRow:
    row = dict(record)
    return OutboundRow(**{**row, "event": json.loads(row["event"]),
                          "state": OutboundState(row["state"])})


_COLUMNS = ("seq, event_id, room_mxid, network, remote_room, sender, event, state, "
            "persona_id, attempts, next_attempt, created_at, last_error, in_flight_at")

# What every queued event goes through: each finds its row by a key or by the first entry of
# outbound_room_idx (room, state, seq).
_ADD = on_the_loop(
    "INSERT INTO outbound (event_id, room_mxid, network, remote_room, sender, event, "
    "state, attempts, next_attempt, created_at, in_flight_at) VALUES ($1, $2, $3, $4, "
    "$5, $6, $7, 0, $8, $8, $9) ON CONFLICT (event_id) DO NOTHING RETURNING seq")
_ADD_IN_FLIGHT = on_the_loop(f"{_ADD}, {BEFORE_RELAYING}")
_HEAD = on_the_loop(f"SELECT {_COLUMNS} FROM outbound WHERE room_mxid=$1 AND state=$2 "
                    "ORDER BY seq LIMIT 1")
_BY_EVENT = on_the_loop(f"SELECT {_COLUMNS} FROM outbound WHERE event_id=$1")
_DONE = on_the_loop("DELETE FROM outbound WHERE seq=$1")
_IN_FLIGHT = on_the_loop("UPDATE outbound SET in_flight_at=$2 WHERE seq=$1")


class OutboundStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(self, event_id: str, room_mxid: str, network: str, remote_room: str,
                  sender: str, event: dict[str, Any], *, in_flight: bool = False
                  ) -> OutboundRow | None:
        """Queue an event; None when it was queued before (a replayed transaction).

        `in_flight`: the connector is called next, with no other row before it, so the row
        is marked in flight as it is written (see `mark_in_flight`) instead of one write
        later, and the same statement answers what relaying it asks first
        (`OutboundRow.before_relaying`)."""
        now = _now_ms()
        row = await self.db.fetchrow(
            _ADD_IN_FLIGHT if in_flight else _ADD, event_id, room_mxid, network, remote_room,
            sender, json.dumps(event), OutboundState.QUEUED.value, now, now if in_flight else None)
        if row is None:
            return None
        return OutboundRow(row["seq"], event_id, room_mxid, network, remote_room, sender, event,
                           OutboundState.QUEUED, None, 0, now, now, None,
                           now if in_flight else None,
                           (bool(row["relayed"]), row["grant_id"]) if in_flight else None)

    async def head(self, room_mxid: str) -> OutboundRow | None:
        """The oldest event of the room still to be sent (parked and failed ones wait aside)."""
        row = await self.db.fetchrow(_HEAD, room_mxid, OutboundState.QUEUED.value)
        return _row(row) if row else None

    async def get(self, event_id: str) -> OutboundRow | None:
        row = await self.db.fetchrow(_BY_EVENT, event_id)
        return _row(row) if row else None

    async def rooms_waiting(self) -> list[str]:
        rows = await self.db.fetch("SELECT DISTINCT room_mxid FROM outbound WHERE state=$1",
                                   OutboundState.QUEUED.value)
        return [r["room_mxid"] for r in rows]

    async def done(self, seq: int) -> None:
        await self.db.execute(_DONE, seq)

    async def mark_in_flight(self, seq: int) -> None:
        """The connector is about to be called: until an outcome is recorded, the network
        may have the event."""
        await self.db.execute(_IN_FLIGHT, seq, _now_ms())

    # Every recorded outcome below clears the mark: the network answered, so the next
    # attempt (if any) knows whether it has the event.
    async def reschedule(self, seq: int, attempts: int, next_attempt: int, error: str, *,
                         keep_in_flight: bool = False) -> None:
        """`keep_in_flight`: the network could not be asked whether it has the event, so the
        next attempt must ask again."""
        await self.db.execute(
            "UPDATE outbound SET attempts=$2, next_attempt=$3, last_error=$4"
            + ("" if keep_in_flight else ", in_flight_at=NULL") + " WHERE seq=$1",
            seq, attempts, next_attempt, error)

    async def park(self, seq: int, persona_id: str, error: str) -> None:
        await self.db.execute(
            "UPDATE outbound SET state=$2, persona_id=$3, last_error=$4, in_flight_at=NULL "
            "WHERE seq=$1", seq, OutboundState.PARKED.value, persona_id, error)

    async def fail(self, seq: int, attempts: int, error: str) -> None:
        await self.db.execute(
            "UPDATE outbound SET state=$2, attempts=$3, last_error=$4, in_flight_at=NULL "
            "WHERE seq=$1", seq, OutboundState.FAILED.value, attempts, error)

    async def requeue(self, state: OutboundState, *, sender: str | None = None,
                      persona_id: str | None = None) -> list[str]:
        """Put a person's failed events (by sender) or a persona's parked events back in
        line, in their original places (order is by `seq`); returns their rooms."""
        column, value = ("sender", sender) if sender is not None else ("persona_id", persona_id)
        where = f"{column}=$1 AND state=$2"
        async with self.db.acquire() as conn, conn.transaction():
            rooms = await conn.fetch(f"SELECT DISTINCT room_mxid FROM outbound WHERE {where}",
                                     value, state.value)
            await conn.execute(
                f"UPDATE outbound SET state=$3, attempts=0, next_attempt=$4 WHERE {where}",
                value, state.value, OutboundState.QUEUED.value, _now_ms())
        return [r["room_mxid"] for r in rooms]

    async def waiting_for(self, persona_id: str) -> int:
        """How many events wait for this persona to be relinked."""
        return await self.db.fetchval(
            "SELECT COUNT(*) FROM outbound WHERE persona_id=$1 AND state=$2",
            persona_id, OutboundState.PARKED.value) or 0

    async def count(self, room_mxid: str | None = None) -> int:
        if room_mxid is None:
            return await self.db.fetchval("SELECT COUNT(*) FROM outbound") or 0
        return await self.db.fetchval(
            "SELECT COUNT(*) FROM outbound WHERE room_mxid=$1", room_mxid) or 0

