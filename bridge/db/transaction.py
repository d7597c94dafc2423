"""appservice_txn: transactions already handled, so a replay after a restart is a no-op.

Rows are keyed by `matrix.appservice.transaction_key` (the id plus a digest of its events).
"""

from __future__ import annotations

import time

from mautrix.util.async_db import Database

from .sqlite_conn import on_the_loop

# Synapse retries a failed transaction for hours at most; a week is ample.
RETENTION_MS = 7 * 24 * 60 * 60 * 1000

# Both run once per transaction, by its primary key.
_HANDLED = on_the_loop("SELECT 1 FROM appservice_txn WHERE txn_id=$1")
_MARK = on_the_loop("INSERT INTO appservice_txn (txn_id, handled_at) VALUES ($1, $2) "
                    "ON CONFLICT (txn_id) DO NOTHING")


class TransactionStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def is_handled(self, txn_id: str) -> bool:
        found = await self.db.fetchval(_HANDLED, txn_id)
        return found is not None

    async def mark_handled(self, txn_id: str) -> None:
        await self.db.execute(_MARK, txn_id, int(time.time() * 1000))

    async def prune(self, now_ms: int | None = None) -> int:
        cutoff = (now_ms or int(time.time() * 1000)) - RETENTION_MS
        rows = await self.db.fetch(
            "DELETE FROM appservice_txn WHERE handled_at < $1 RETURNING txn_id", cutoff
        )
        return len(rows)
