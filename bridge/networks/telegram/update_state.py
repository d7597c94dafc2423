"""Where each person's session is in Telegram's update stream (pts, qts, date, seq and
each channel's pts), kept by the core per persona: after a restart Telethon catches up
from there with updates.getDifference / getChannelDifference before any new update, so
what was said while the bridge was down arrives once, in order.

The session string in the vault holds only the auth key, never this state: a cursor that
changes with every message must not mean re-sealing a secret.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from ..base import BridgeSink
from ..lazy import lazy

if TYPE_CHECKING:
    from telethon.tl import types
else:
    types = lazy("telethon.tl.types")  # imported when the first session opens


class Session(Protocol):
    """What the update state needs of a person's Telegram session."""

    persona_id: str
    client: Any

log = logging.getLogger("relayforge.telegram.updates")


class UpdateState:
    def __init__(self, sink: Callable[[], BridgeSink | None]) -> None:
        # The connector's sink, once it has one (the state is kept through it).
        self._sink = sink
        self._saved: dict[str, dict[str, Any]] = {}

    async def restore(self, session: Session) -> None:
        """Put the recorded state into the (in-memory) session before it connects."""
        sink = self._sink()
        if sink is None:
            return
        saved = await sink.load_sync_state(session.persona_id)
        if not saved or not saved.get("pts"):
            return  # never recorded: Telethon starts from the current state (GetState)
        self._saved[session.persona_id] = saved
        store = session.client.session
        store.set_update_state(0, types.updates.State(
            pts=int(saved["pts"]), qts=int(saved.get("qts") or 0),
            date=datetime.fromtimestamp(int(saved.get("date") or 0), UTC),
            seq=int(saved.get("seq") or 0), unread_count=0))
        now = datetime.now(UTC)
        for channel_id, pts in (saved.get("channels") or {}).items():
            store.set_update_state(int(channel_id), types.updates.State(
                pts=int(pts), qts=0, date=now, seq=0, unread_count=0))

    async def record(self, session: Session) -> None:
        """Keep the state the session has reached (after its handlers ran), if it moved."""
        sink = self._sink()
        if sink is None:
            return
        # Telethon's message box is the one place that knows the state it has applied.
        box = getattr(session.client, "_message_box", None)
        if box is None or box.is_empty():
            return
        account, channels = box.session_state()
        if not account.get("pts"):
            return
        state = {"pts": account["pts"], "qts": account["qts"], "seq": account["seq"],
                 "date": int(account["date"].timestamp()),
                 "channels": {str(k): v for k, v in sorted(channels.items())}}
        if self._saved.get(session.persona_id) == state:
            return
        try:
            await sink.save_sync_state(session.persona_id, state)
        except Exception as e:  # a full disk must not stop messages reaching Matrix
            log.warning("Could not record the Telegram update state of %s: %s",
                        session.persona_id, e)
            return
        self._saved[session.persona_id] = state
