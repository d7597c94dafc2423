"""Database round trips per relayed message, on SQLite, through a real bridge and Synapse.

    .venv/bin/python -m bench.db_trips [--n 50] [--statements]

A round trip is one hand-off of work to aiosqlite's database thread (`Connection._execute`):
each wakes that thread and then the event loop, whatever the load, so the count does not
depend on how busy the machine is. Messages go one at a time, and the bridge is let go quiet
(no hand-off for `--settle` seconds) after each, so every count belongs to one message.

Per direction it reports:
- remote -> Matrix: hand-offs while the bridge handles the connector's message (until
  `handle_remote_event` returns), and in all, with the homeserver's echo of it handled;
- Matrix -> remote: hand-offs from the person's send until the connector's `send_message` is
  called, and in all, once the send was recorded and its queue row deleted.

Each is measured twice on the same bridge, first with mautrix's SQLite connection (the pool's
connections turned back into `TxnConnection`s) and then with the bridge's own
(`bridge/db/sqlite_conn.py`), so the two differ only in the connection.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import secrets
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiosqlite.core
from mautrix.util.async_db.aiosqlite import SQLiteDatabase, TxnConnection

from bridge.db.sqlite_conn import OneTripConnection
from bridge.networks.base import MatrixMessage, RemoteMessage, SendResult

from .harness import Harness
from .measure import DEADLINE, Lanes, make_probe_room, prepare

CONNECTIONS: dict[str, type[TxnConnection]] = {"mautrix": TxnConnection,
                                               "one-trip": OneTripConnection}


class HandOffs:
    """Counts every hand-off to any aiosqlite connection's thread in this process, and (when
    asked) what each one ran."""

    def __init__(self) -> None:
        self.count = 0
        self.statements: Counter[str] | None = None
        self._original = aiosqlite.core.Connection._execute

    def install(self) -> None:
        original, counter = self._original, self

        async def counted(conn: Any, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
            counter.count += 1
            if counter.statements is not None:
                counter.statements[_label(fn, args)] += 1
            return await original(conn, fn, *args, **kwargs)

        aiosqlite.core.Connection._execute = counted  # type: ignore[method-assign]

    def uninstall(self) -> None:
        aiosqlite.core.Connection._execute = self._original  # type: ignore[method-assign]

    async def settled(self, quiet: float) -> int:
        """The count once no hand-off happened for `quiet` seconds."""
        last, since = self.count, time.monotonic()
        while time.monotonic() - since < quiet:
            await asyncio.sleep(quiet / 10)
            if self.count != last:
                last, since = self.count, time.monotonic()
        return last


def _label(fn: Callable[..., Any], args: tuple[Any, ...]) -> str:
    name = getattr(fn, "__name__", repr(fn))
    sql = next((a for a in args if isinstance(a, str)), None)
    if sql is None:
        return name
    return f"{name}: {' '.join(sql.split())[:110]}"


def use_connection(h: Harness, kind: type[TxnConnection]) -> None:
    """Turn the bridge's pooled SQLite connections into `kind` (a bench-only switch: both
    classes hold the same state, the subclass only changes methods)."""
    assert h.bridge is not None and h.bridge.storage is not None
    db = h.bridge.storage.db
    if not isinstance(db, SQLiteDatabase):
        raise SystemExit("bench.db_trips counts SQLite hand-offs: run it without --database")
    pooled = [db._pool.get_nowait() for _ in range(db._pool.qsize())]
    for conn in pooled:
        conn.__class__ = kind
        db._pool.put_nowait(conn)


def stats(values: list[int]) -> dict[str, float]:
    return {"mean": round(statistics.fmean(values), 2), "min": min(values),
            "max": max(values)}


async def remote_to_matrix(h: Harness, lanes: Lanes, trips: HandOffs, n: int, settle: float,
                           run: str) -> dict[str, Any]:
    assert h.watcher is not None and h.person is not None
    handled, total = [], []
    for i in range(n):
        body = f"rftrips {run} r {i}"
        start = await trips.settled(settle)
        await h.connector.emit(RemoteMessage(
            room=lanes.remote_rooms[0], sender=lanes.remote_senders[0],
            receiver=h.person.user_id, message_id=body, text=body))
        handled.append(trips.count - start)
        await h.watcher.visible.wait([body], DEADLINE)
        total.append(await trips.settled(settle) - start)
    return {"handled": stats(handled), "total": stats(total)}


async def matrix_to_remote(h: Harness, portal: str, trips: HandOffs, n: int, settle: float,
                           run: str) -> dict[str, Any]:
    assert h.person is not None
    at_connector: dict[str, int] = {}
    original: Callable[[MatrixMessage], Awaitable[SendResult]] = h.connector.send_message

    async def noted(event: MatrixMessage) -> SendResult:
        at_connector.setdefault(event.text, trips.count)
        return await original(event)

    h.connector.send_message = noted  # type: ignore[method-assign]
    try:
        before, total = [], []
        for i in range(n):
            body = f"rftrips {run} m {i}"
            start = await trips.settled(settle)
            await h.person.send_text(portal, body)
            await h.delivered.wait([body], DEADLINE)
            before.append(at_connector[body] - start)
            total.append(await trips.settled(settle) - start)
    finally:
        del h.connector.send_message
    return {"before_connector": stats(before), "total": stats(total)}


async def run(args: argparse.Namespace, directory: Path) -> dict[str, Any]:
    trips = HandOffs()
    trips.install()
    h = Harness(directory, None)
    try:
        await h.start()
        lanes = await prepare(h, 1)
        await make_probe_room(h)  # as in `python -m bench`: the probe is in the room list
        results: dict[str, Any] = {"n": args.n, "settle_s": args.settle}
        # Background work (none expected): hand-offs in a quiet stretch with no messages.
        idle_from = await trips.settled(args.settle)
        await asyncio.sleep(2.0)
        results["idle_per_2s"] = trips.count - idle_from
        for name, kind in CONNECTIONS.items():
            use_connection(h, kind)
            run_id = secrets.token_hex(3)
            # Warm: the bridge's caches (state store, portal, ghost) hold what they will.
            await remote_to_matrix(h, lanes, trips, 5, args.settle, run_id + "w")
            await matrix_to_remote(h, lanes.portals[0], trips, 5, args.settle, run_id + "w")
            if args.statements:
                trips.statements = Counter()
            r2m = await remote_to_matrix(h, lanes, trips, args.n, args.settle, run_id)
            r2m_statements, trips.statements = trips.statements, (
                Counter() if args.statements else None)
            m2r = await matrix_to_remote(h, lanes.portals[0], trips, args.n, args.settle,
                                         run_id)
            entry: dict[str, Any] = {"remote_to_matrix": r2m, "matrix_to_remote": m2r}
            if args.statements and r2m_statements is not None and trips.statements is not None:
                entry["statements_per_message"] = {
                    "remote_to_matrix": _per_message(r2m_statements, args.n),
                    "matrix_to_remote": _per_message(trips.statements, args.n)}
            trips.statements = None
            results[name] = entry
        return results
    except Exception:
        print(h.synapse_log_tail(), file=sys.stderr)
        raise
    finally:
        await h.stop()
        trips.uninstall()


def _per_message(statements: Counter[str], n: int) -> dict[str, float]:
    return {label: round(count / n, 2) for label, count in statements.most_common()}


def table(results: dict[str, Any]) -> str:
    rows = [("remote -> Matrix, while handled", "remote_to_matrix", "handled"),
            ("remote -> Matrix, with its echo", "remote_to_matrix", "total"),
            ("Matrix -> remote, before the connector", "matrix_to_remote", "before_connector"),
            ("Matrix -> remote, in all", "matrix_to_remote", "total")]
    names = list(CONNECTIONS)
    lines = [f"{'hand-offs per message (mean)':40} " + " ".join(f"{n:>9}" for n in names)]
    for label, direction, key in rows:
        lines.append(f"{label:40} " + " ".join(
            f"{results[n][direction][key]['mean']:>9}" for n in names))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.db_trips", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=50, help="messages each way (default 50)")
    parser.add_argument("--settle", type=float, default=0.3,
                        help="seconds without a hand-off that count as quiet (default 0.3)")
    parser.add_argument("--statements", action="store_true",
                        help="also list what each hand-off ran, per message")
    parser.add_argument("--workdir", type=Path, help="keep Synapse and configs here")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("--n must be at least 1")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
        results = asyncio.run(run(args, args.workdir.resolve()))
    else:
        with tempfile.TemporaryDirectory(prefix="relayforge-trips-") as tmp:
            results = asyncio.run(run(args, Path(tmp)))
    print(json.dumps(results, indent=2))
    print(table(results), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
