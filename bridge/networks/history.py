"""Reading a remote room's past: what a connector offers the core for backfill and catch-up.

A connector that can read history implements `HistoryReader.fetch_history` (an optional
method of the connector; `history_reader` tells whether it has one). The core
(core/backfill*.py) calls it as the person's persona, paces and resumes it, and sends what
it returns through the same path as live events, so replies, threads, edits, reactions and
media look the same as when they happen live.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

import attrs

if TYPE_CHECKING:
    from .base import RemoteEvent, RemoteRoom


@attrs.frozen
class HistoryCursor:
    """A point in a room's history; what `fetch_history` returns is strictly after it.

    `ts_ms` is always set (the original time of the newest event handled, in ms since the
    epoch); `token` is the network's own position when known (a Slack ts, an XMPP MAM
    archive id, a Discord snowflake, a Telegram message id). A connector uses `token` when it
    is given and falls back to `ts_ms` (then an event at exactly `ts_ms` may come again: the
    core's message map drops what it already has)."""

    ts_ms: int
    token: str | None = None


@attrs.frozen
class HistoryPage:
    """Events of one room, oldest first, as the live path would have reported them:
    `RemoteMessage` (with its original `timestamp_ms`, `reply_to`/`thread_root`, media,
    and the text of its latest edit), `RemoteReaction` after its message, and `RemoteEdit`
    or `RemoteRedaction` only for messages older than the page. Thread replies are in the
    page in time order, after their root.

    `cursor` is the position of the newest event in the page (None for an empty page: the
    caller keeps its own); `more` says whether newer history follows that `fetch_history`
    with `after=cursor` would return."""

    events: tuple[RemoteEvent, ...]
    cursor: HistoryCursor | None
    more: bool = False


class NoHistory(Exception):
    """The network, its server, or this room keeps no history the bridge can read (an XMPP
    server without MAM). Nothing is backfilled; live bridging goes on."""


class HistoryNotReadable(Exception):
    """This persona may not read this room's history (not a member, no permission). The
    core reads history only as the person whose rule maps the room, so nothing is
    backfilled and nobody else's access is tried."""


@runtime_checkable
class HistoryReader(Protocol):
    async def fetch_history(self, persona_id: str, room: RemoteRoom, *,
                            after: HistoryCursor | None, not_before_ms: int | None,
                            limit: int) -> HistoryPage:
        """Read history of `room` as `persona_id`.

        - `after` None (a new portal): the newest `limit` messages no older than
          `not_before_ms`, returned oldest first.
        - `after` given (catching up, resuming): the oldest `limit` messages strictly after
          it (and no older than `not_before_ms`), oldest first, with `more` set when newer
          ones remain.

        `limit` counts messages (`RemoteMessage`); reactions of those messages come along
        uncounted. Raises `NoHistory`, `HistoryNotReadable`, `RateLimited` (the core waits
        `retry_after` and asks again), or anything else for a passing failure (retried with
        backoff)."""
        ...


def history_reader(connector: object) -> HistoryReader | None:
    """The connector as a history reader, or None when it cannot read history."""
    return connector if isinstance(connector, HistoryReader) else None
