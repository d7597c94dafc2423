"""sync_state: where a persona's session last was in its network's update stream (a cursor,
never a secret), so a restart catches up from there instead of skipping what was missed."""

from __future__ import annotations

import json
import time
from typing import Any

from mautrix.util.async_db import Database


class SyncStateStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, persona_id: str) -> dict[str, Any] | None:
        row = await self.db.fetchrow("SELECT state FROM sync_state WHERE persona_id=$1",
                                     persona_id)
        return json.loads(row["state"]) if row else None

    async def put(self, persona_id: str, state: dict[str, Any]) -> None:
        await self.db.execute(
            "INSERT INTO sync_state (persona_id, state, updated_at) VALUES ($1, $2, $3) "
            "ON CONFLICT (persona_id) DO UPDATE SET state=excluded.state, "
            "updated_at=excluded.updated_at",
            persona_id, json.dumps(state, sort_keys=True), int(time.time() * 1000))

    async def forget(self, persona_id: str) -> None:
        await self.db.execute("DELETE FROM sync_state WHERE persona_id=$1", persona_id)
