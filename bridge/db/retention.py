"""Retention's deletes by age (the logic is in `bridge.compliance.retention`): message maps
and queued-send history, except what an active legal hold covers."""

from __future__ import annotations

from mautrix.util.async_db import Database

from .held_message import MESSAGE_ROW_HELD
from .outbound import OutboundState

# A queued send whose Matrix event an active hold captured.
_OUTBOUND_HELD = (
    "EXISTS (SELECT 1 FROM held_message h JOIN held_message_hold c ON c.message_id = h.id "
    "JOIN legal_hold l ON l.id = c.hold_id WHERE l.released_at IS NULL "
    "AND h.mxid = outbound.event_id)")


class RetentionStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def purge_messages(self, before_ms: int) -> int:
        """Message-map rows older than `before_ms` that no active hold covers."""
        rows = await self.db.fetch(
            f"DELETE FROM message WHERE timestamp < $1 AND NOT ({MESSAGE_ROW_HELD}) "
            "RETURNING mxid", before_ms)
        return len(rows)

    async def purge_outbound(self, before_ms: int) -> int:
        """Sends that gave up or wait for a relink, queued before `before_ms` (what is still
        being sent is left to the delivery's own limits)."""
        rows = await self.db.fetch(
            "DELETE FROM outbound WHERE created_at < $1 AND state IN ($2, $3) "
            f"AND NOT ({_OUTBOUND_HELD}) RETURNING seq",
            before_ms, OutboundState.FAILED.value, OutboundState.PARKED.value)
        return len(rows)
