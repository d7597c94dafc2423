"""The message map's own cost on SQLite, at 0 and at a million rows: the CPU time the SQLite
engine spends per insert and lookup, without the asyncio thread hop around it, and the query
plans. On a busy machine the wall-clock figures of `python -m bench --parts message_map`
move by more than the map's growth; the engine's CPU time per operation does not.

    python -m bench.map_engine [--rows 1000000] [--before-v22]

`--before-v22`: with the two indexes schema v22 dropped or narrowed put back, to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from .endpoints import NETWORK

QUERIES = {
    "by_room_ref": "SELECT * FROM message WHERE network=? AND remote_room=? AND room_ref=?",
    "by_remote_id": "SELECT * FROM message WHERE network=? AND remote_room=? AND remote_id=?",
    "by_event_id": "SELECT * FROM message WHERE mxid=?",
    "newest_in_room": "SELECT MAX(timestamp) FROM message WHERE network=? AND remote_room=?",
}
INSERT = ("INSERT INTO message (network, remote_room, remote_id, kind, mxid, room_mxid, "
          "sender_mxid, timestamp) VALUES (?, ?, ?, 'message', ?, ?, '@s:localhost', ?) "
          "ON CONFLICT DO NOTHING RETURNING mxid")
BEFORE_V22 = ("DROP INDEX IF EXISTS message_room_ref_idx",
              "CREATE INDEX IF NOT EXISTS message_room_idx ON message (room_mxid)",
              "CREATE INDEX message_room_ref_idx ON message (network, remote_room, room_ref)")


async def _build(directory: Path, rows: int) -> tuple[Path, Path]:
    from .scale import _many, _map_database

    empty, full = directory / "engine-empty.db", directory / "engine-full.db"
    rooms = max(1, rows // 1000)
    storage = await _map_database(f"sqlite:{empty}", 0)
    await _many(storage.db, "INSERT INTO portal (network, remote_id, mxid, name, created_at) "
                "VALUES ($1, $2, $3, 'm', 0)",
                [(NETWORK, f"maproom{r}", f"!maproom{r}:localhost") for r in range(1, rooms)])
    await storage.close()
    await (await _map_database(f"sqlite:{full}", rows)).close()
    return empty, full


def _connect(path: Path) -> sqlite3.Connection:
    # What mautrix's SQLite backend sets (util/async_db/aiosqlite.py).
    conn = sqlite3.connect(path, isolation_level=None)
    for pragma in ("PRAGMA foreign_keys = ON", "PRAGMA journal_mode = WAL",
                   "PRAGMA synchronous = NORMAL"):
        conn.execute(pragma)
    return conn


def _operations(conn: sqlite3.Connection, rooms: int, samples: int
                ) -> dict[str, tuple[float, float]]:
    """Microseconds per operation: (wall clock, this thread's CPU)."""
    tag = secrets.token_hex(3)
    now = int(time.time() * 1000)
    steps = {
        "insert": lambda i: conn.execute(INSERT, (
            NETWORK, f"maproom{i % rooms}", f"new{tag}{i}", f"$new{tag}{i}",
            f"!maproom{i % rooms}:localhost", now + i)).fetchall(),
        # The map's remote lookup asks the room's own id first, then the sender's.
        "by_remote_id": lambda i: (
            conn.execute(QUERIES["by_room_ref"], (NETWORK, f"maproom{i % rooms}",
                                                  f"new{tag}{i}")).fetchall(),
            conn.execute(QUERIES["by_remote_id"], (NETWORK, f"maproom{i % rooms}",
                                                   f"new{tag}{i}")).fetchall()),
        "by_event_id": lambda i: conn.execute(QUERIES["by_event_id"],
                                              (f"$new{tag}{i}",)).fetchall(),
        "newest_in_room": lambda i: conn.execute(QUERIES["newest_in_room"],
                                                 (NETWORK, f"maproom{i % rooms}")).fetchall(),
    }
    took = {}
    for name, step in steps.items():
        wall, cpu = time.perf_counter(), time.thread_time()
        for i in range(samples):
            step(i)
        took[name] = ((time.perf_counter() - wall) / samples * 1e6,
                      (time.thread_time() - cpu) / samples * 1e6)
    return took


def _plans(conn: sqlite3.Connection) -> dict[str, str]:
    args = {"by_room_ref": (NETWORK, "maproom1", "x"), "by_remote_id": (NETWORK, "maproom1", "x"),
            "by_event_id": ("$x",), "newest_in_room": (NETWORK, "maproom1")}
    return {name: "; ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}",
                                                           args[name]))
            for name, sql in QUERIES.items()}


def measure(empty: Path, full: Path, rows: int, samples: int, rounds: int,
            before_v22: bool) -> dict[str, Any]:
    rooms = max(1, rows // 1000)
    conns = {"empty": _connect(empty), "full": _connect(full)}
    if before_v22:
        for conn in conns.values():
            for sql in BEFORE_V22:
                conn.execute(sql)
            conn.execute("ANALYZE")  # statistics for the indexes put back, as for the rest
    indexes = [row[0] for row in conns["full"].execute(
        "SELECT name FROM sqlite_master WHERE type='index' AND tbl_name='message'")]
    for conn in conns.values():
        _operations(conn, rooms, samples // 5)  # warm: statements, page cache
    runs: dict[str, list[dict[str, tuple[float, float]]]] = {"empty": [], "full": []}
    for _ in range(rounds):  # alternating, so a busy moment hits both alike
        for name, conn in conns.items():
            runs[name].append(_operations(conn, rooms, samples))
    result: dict[str, Any] = {"rows": rows, "samples": samples, "rounds": rounds,
                              "indexes": indexes, "plans_full": _plans(conns["full"])}
    for clock, label in ((1, "cpu_us"), (0, "wall_us")):
        median = {name: {op: round(statistics.median(r[op][clock] for r in runs[name]), 1)
                         for op in runs[name][0]} for name in runs}
        result[label] = {"empty": median["empty"], "full": median["full"],
                         "ratio": {op: round(median["full"][op] / median["empty"][op], 2)
                                   for op in median["empty"]}}
    for conn in conns.values():
        conn.close()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--before-v22", action="store_true",
                        help="put back the indexes schema v22 dropped or narrowed")
    args = parser.parse_args(argv)
    if args.rows < 1 or args.samples < 5 or args.rounds < 1:
        parser.error("--rows, --rounds at least 1; --samples at least 5")
    with tempfile.TemporaryDirectory(prefix="relayforge-map-engine-") as tmp:
        empty, full = asyncio.run(_build(Path(tmp), args.rows))
        print(json.dumps(measure(empty, full, args.rows, args.samples, args.rounds,
                                 args.before_v22), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
