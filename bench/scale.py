"""Scale: start-up with many portals, personas and rules against an empty database, memory
per 1,000 active portals (bench/active_portals.py), and the message map at a million rows
against an empty map.

Start-up: the same bridge config and homeserver, a database migrated and empty (baseline)
against one holding `portals` portals, `personas` active personas with one rule each; timed
from `Bridge.start()` until it returns (ready: transactions are taken; the networks and
sessions open in the background, after ready), in alternating order after one uncounted
start of each, on SQLite and (with a PostgreSQL server) PostgreSQL. Message map: the lookups
relaying makes per message (remote id -> event, event -> remote id, insert) timed at 0 and at
`rows` rows.
"""

from __future__ import annotations

import cProfile
import gc
import logging
import secrets
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from bridge.app import Bridge
from bridge.config_keys import SCHEMA
from bridge.configure import load_config
from bridge.db import open_database

from .active_portals import _Nowhere, active_portal_memory
from .endpoints import NETWORK, BenchConnector

BATCH = 5000
# Portals made active for the memory figure, and the portal cache sizes it is measured with.
ACTIVE_PORTALS = 10_000
CACHE_SIZES = (10_000, 2_000)


def config_with_database(config_path: Path, db_uri: str, out: Path) -> Path:
    yaml = YAML()
    data = yaml.load(config_path.read_text())
    data["database"]["uri"] = db_uri
    # Each database has its own vault key file (a key file belongs to one database).
    data["vault"]["file"]["key_path"] = str(out.with_suffix(".key"))
    data["audit"]["checkpoint_file"] = str(out.with_suffix(".checkpoint"))
    with out.open("w") as stream:
        yaml.dump(data, stream)
    return out


def config_with_cache_size(config_path: Path, size: int, out: Path) -> Path:
    """The same bridge (database, vault key) with another `bridge.portal_cache_size`, and
    the same size for the room state kept in memory where the bridge has that setting."""
    yaml = YAML()
    data = yaml.load(config_path.read_text())
    data["bridge"]["portal_cache_size"] = size
    if any(key.path == "bridge.room_state_cache_size" for key in SCHEMA):
        data["bridge"]["room_state_cache_size"] = size
    with out.open("w") as stream:
        yaml.dump(data, stream)
    return out


async def _many(db: Any, sql: str, rows: list[tuple]) -> None:
    # One transaction per batch: SQLite commits (and syncs) each statement otherwise.
    for start in range(0, len(rows), BATCH):
        async with db.acquire() as conn, conn.transaction():
            await conn.executemany(sql, rows[start:start + BATCH])


async def seed(db_uri: str, portals: int, personas: int) -> None:
    """`portals` portals; `personas` accounts, each with a profile (its space made), an
    active persona and one mapping rule."""
    storage = await open_database(db_uri)
    db = storage.db
    now = int(time.time() * 1000)
    try:
        await _many(db, "INSERT INTO account (id, status, credits, created_at) "
                    "VALUES ($1, 'active', 0, $2)",
                    [(f"acct_b{i}", now) for i in range(personas)])
        await _many(db, "INSERT INTO profile (id, account_id, name, space_mxid, created_at) "
                    "VALUES ($1, $2, 'Jobb', $3, $4)",
                    [(f"prof_b{i}", f"acct_b{i}", f"!space{i}:localhost", now)
                     for i in range(personas)])
        await _many(db, "INSERT INTO persona (id, profile_id, vault_profile, platform, "
                    "external_user_id, display_name, scopes, status, created_at) VALUES "
                    "($1, $2, $2, $3, $4, NULL, '[]', 'active', $5)",
                    [(f"per_b{i}", f"prof_b{i}", NETWORK, f"user{i}", now)
                     for i in range(personas)])
        await _many(db, "INSERT INTO mapping_rule (id, account_id, profile_id, network, "
                    "remote, target_room, inbound_only, relay, created_at) VALUES "
                    "($1, $2, $3, $4, $5, NULL, false, false, $6)",
                    [(f"rule_b{i}", f"acct_b{i}", f"prof_b{i}", NETWORK, f"room{i}", now)
                     for i in range(personas)])
        await _many(db, "INSERT INTO portal (network, remote_id, mxid, name, created_at) "
                    "VALUES ($1, $2, $3, $4, $5)",
                    [(NETWORK, f"room{i}", f"!portal{i}:localhost", f"room {i}", now)
                     for i in range(portals)])
    finally:
        await storage.close()


async def timed_start(config: Path, profiler: cProfile.Profile | None = None
                      ) -> tuple[float, float, Bridge]:
    """Seconds until ready, and the seconds of CPU the bridge's own thread (the event loop)
    spent in them."""
    bridge = Bridge(load_config(str(config)), [BenchConnector(_Nowhere())])
    # A real start is a fresh process: the bridges started before this one leave garbage
    # that must not be collected inside this one's timing.
    gc.collect()
    if profiler is not None:
        profiler.enable()
    started, cpu = time.perf_counter(), time.thread_time()
    try:
        await bridge.start()
    finally:
        if profiler is not None:
            profiler.disable()
    return time.perf_counter() - started, time.thread_time() - cpu, bridge


async def startup(config_path: Path, directory: Path, portals: int, personas: int,
                  repeats: int = 7, postgres: str | None = None,
                  profile: Path | None = None) -> dict[str, Any]:
    """Start-up against an empty database, and memory per 1,000 portals made active, on
    SQLite and (given a server) PostgreSQL; `profile`: a cProfile of the full database's
    starts (`<profile>.<database>`)."""
    # Thousands of rules that cannot join the bench network would each log a warning.
    logging.getLogger("relayforge").setLevel(logging.ERROR)
    tag = secrets.token_hex(3)
    result = await _startup_on(
        config_path, directory, "sqlite", f"sqlite:{directory / f'empty-{tag}.db'}",
        f"sqlite:{directory / f'full-{tag}.db'}", portals, personas, repeats, profile)
    if postgres:
        empty_uri, drop_empty = await postgres_database(postgres)
        full_uri, drop_full = await postgres_database(postgres)
        try:
            result["postgres"] = await _startup_on(
                config_path, directory, "postgres", empty_uri, full_uri, portals, personas,
                repeats, profile)
        finally:
            await drop_empty()
            await drop_full()
    return result


async def _startup_on(config_path: Path, directory: Path, kind: str, empty_uri: str,
                      full_uri: str, portals: int, personas: int, repeats: int,
                      profile: Path | None) -> dict[str, Any]:
    await (await open_database(empty_uri)).close()  # migrated, so both start alike
    await seed(full_uri, portals, personas)
    empty_cfg = config_with_database(config_path, empty_uri, directory / f"empty-{kind}.yaml")
    full_cfg = config_with_database(config_path, full_uri, directory / f"full-{kind}.yaml")
    profiler = cProfile.Profile() if profile else None
    times: dict[str, list[float]] = {"empty": [], "full": []}
    cpu: dict[str, list[float]] = {"empty": [], "full": []}
    # One start of each first, not counted: the first start imports and compiles what the
    # later ones reuse, which would count against whichever database went first.
    for repeat in range(-1, repeats):
        for name, cfg in (("empty", empty_cfg), ("full", full_cfg)):
            took, used, bridge = await timed_start(cfg, profiler if name == "full" else None)
            if repeat >= 0:
                times[name].append(took)
                cpu[name].append(used)
            await bridge.stop()
    if profiler is not None and profile is not None:
        profiler.dump_stats(f"{profile}.{kind}")
    # The full database again, with the default portal cache (all 10,000 fit) and a smaller
    # one (memory must stop growing at its size).
    memory = await active_portal_memory(
        {size: config_with_cache_size(full_cfg, size, directory / f"cache{size}-{kind}.yaml")
         for size in CACHE_SIZES},
        portals, personas, ACTIVE_PORTALS)
    default = (memory or {}).get(f"portal_cache_size_{CACHE_SIZES[0]}")
    empty, full = statistics.median(times["empty"]), statistics.median(times["full"])
    # On a busy machine the other processes' load varies most between starts: the ratio is
    # the median of each round's (one start of each, one right after the other), and the
    # event loop's CPU time shows what the bridge itself did whatever the load.
    pairs = [f / e for e, f in zip(times["empty"], times["full"], strict=True)]
    cpu_empty, cpu_full = statistics.median(cpu["empty"]), statistics.median(cpu["full"])
    return {"database": kind, "portals": portals, "active_personas": personas,
            "active_rules": personas, "target_ratio": 1.5, "repeats": repeats,
            "empty_s": round(empty, 3), "full_s": round(full, 3),
            "ratio": round(statistics.median(pairs), 2),
            "loop_cpu_empty_s": round(cpu_empty, 3), "loop_cpu_full_s": round(cpu_full, 3),
            "loop_cpu_ratio": round(cpu_full / cpu_empty, 2),
            "rss_mib_per_1000_active_portals":
                default["per_1000_active"]["rss_mib"] if default else None,
            # RSS reads low when the start freed memory the allocator then reuses (10,000
            # rules that cannot join); the live Python heap counts every portal's bytes.
            "heap_mib_per_1000_active_portals":
                default["per_1000_active"]["heap_mib"] if default else None,
            "active_portal_memory": memory}


async def _map_database(db_uri: str, rows: int) -> Any:
    """A migrated database with `rows` message map rows over rows/1000 portals, settled."""
    storage = await open_database(db_uri)
    db = storage.db
    now = int(time.time() * 1000)
    rooms = max(1, rows // 1000)
    await _many(db, "INSERT INTO portal (network, remote_id, mxid, name, created_at) "
                "VALUES ($1, $2, $3, $4, $5)",
                [(NETWORK, f"maproom{r}", f"!maproom{r}:localhost", "m", now)
                 for r in range(rooms)])
    await _many(db, "INSERT INTO message (network, remote_room, remote_id, kind, mxid, "
                "room_mxid, sender_mxid, timestamp) VALUES "
                "($1, $2, $3, 'message', $4, $5, '@s:localhost', $6)",
                [(NETWORK, f"maproom{i % rooms}", f"m{i}", f"$m{i}",
                  f"!maproom{i % rooms}:localhost", now + i) for i in range(rows)])
    await _settle(db)
    return storage


async def message_map(empty_uri: str, full_uri: str, rows: int, samples: int = 300,
                      rounds: int = 5) -> dict[str, Any]:
    """Per-lookup time of the message map at 0 rows and at `rows` rows (the same rooms),
    in alternating rounds so that a busy moment of the machine hits both alike.

    Besides the wall-clock time, the CPU time this process spent per operation (`cpu_us`):
    on SQLite the database engine runs in this process, so that is the map's own work, which
    other processes' load and disk writes do not change; on PostgreSQL it is only the
    client's share (the server's work is in the wall-clock time only)."""
    empty_db = await _map_database(empty_uri, 0)
    full_db = await _map_database(full_uri, rows)
    rooms = max(1, rows // 1000)
    try:
        # Portals for the empty map's lookups, too: the same rooms exist in both.
        now = int(time.time() * 1000)
        await _many(empty_db.db, "INSERT INTO portal (network, remote_id, mxid, name, "
                    "created_at) VALUES ($1, $2, $3, $4, $5)",
                    [(NETWORK, f"maproom{r}", f"!maproom{r}:localhost", "m", now)
                     for r in range(1, rooms)])
        for storage in (empty_db, full_db):
            await _lookups(storage, rooms, samples // 5)  # warm: statements, caches
        runs: dict[str, list[dict[str, tuple[float, float]]]] = {"empty": [], "full": []}
        for _ in range(rounds):
            runs["empty"].append(await _lookups(empty_db, rooms, samples))
            runs["full"].append(await _lookups(full_db, rooms, samples))
    finally:
        await empty_db.close()
        await full_db.close()
    result: dict[str, Any] = {"rows": rows, "rounds": rounds, "samples": samples}
    for clock, name in ((0, "us"), (1, "cpu_us")):
        empty = {k: round(statistics.median(r[k][clock] for r in runs["empty"]), 1)
                 for k in runs["empty"][0]}
        full = {k: round(statistics.median(r[k][clock] for r in runs["full"]), 1)
                for k in runs["full"][0]}
        suffix = "" if name == "us" else "_cpu"
        result.update({f"empty_{name}": empty, f"full_{name}": full,
                       f"ratio{suffix}": {k: round(full[k] / empty[k], 2) for k in empty}})
    return result


async def _settle(db: Any) -> None:
    """After the bulk load, as a database that has been running is: statistics gathered and
    (SQLite) the write-ahead log folded into the database file."""
    if db.scheme.value == "postgres":
        await db.execute("ANALYZE message")
    else:
        await db.execute("ANALYZE")
        await db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


async def _lookups(storage: Any, rooms: int, samples: int
                   ) -> dict[str, tuple[float, float]]:
    """Microseconds per operation: (wall clock, this process's CPU)."""
    from bridge.db.message import MessageKind, MessageRow

    tag = secrets.token_hex(3)
    messages = storage.messages
    operations: dict[str, Callable[[int], Awaitable[Any]]] = {
        "insert": lambda i: messages.insert(MessageRow(
            network=NETWORK, remote_room=f"maproom{i % rooms}", remote_id=f"new{tag}{i}",
            kind=MessageKind.MESSAGE, mxid=f"$new{tag}{i}",  # type: ignore[arg-type]
            room_mxid=f"!maproom{i % rooms}:localhost",  # type: ignore[arg-type]
            sender_mxid="@s:localhost")),  # type: ignore[arg-type]
        "by_remote_id": lambda i: messages.get_by_remote(NETWORK, f"maproom{i % rooms}",
                                                         f"new{tag}{i}"),
        "by_event_id": lambda i: messages.get_by_mxid(f"$new{tag}{i}"),
        "newest_in_room": lambda i: messages.latest_timestamp(NETWORK, f"maproom{i % rooms}"),
    }
    took: dict[str, tuple[float, float]] = {}
    for name, operation in operations.items():
        wall, cpu = time.perf_counter(), time.process_time()
        for i in range(samples):
            await operation(i)
        took[name] = (round((time.perf_counter() - wall) / samples * 1e6, 1),
                      round((time.process_time() - cpu) / samples * 1e6, 1))
    return took


async def postgres_database(server: str) -> tuple[str, Any]:
    """A throwaway database on the PostgreSQL server `server` (postgres://user@host:port);
    returns its URI and a function that drops it."""
    import asyncpg

    name = f"rfbench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(f"{server.rstrip('/')}/postgres")
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()

    async def drop() -> None:
        conn = await asyncpg.connect(f"{server.rstrip('/')}/postgres")
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await conn.close()
    return f"{server.rstrip('/')}/{name}", drop


async def message_maps(directory: Path, rows: int, postgres: str | None) -> dict[str, Any]:
    result = {"sqlite": await message_map(f"sqlite:{directory / 'map-empty.db'}",
                                          f"sqlite:{directory / 'map-full.db'}", rows)}
    if postgres:
        empty_uri, drop_empty = await postgres_database(postgres)
        full_uri, drop_full = await postgres_database(postgres)
        try:
            result["postgres"] = await message_map(empty_uri, full_uri, rows)
        finally:
            await drop_empty()
            await drop_full()
    return result
