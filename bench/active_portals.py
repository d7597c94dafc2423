"""Memory with many active portals: RSS and Python heap per 1,000 portals made active the
way live traffic makes them, with the portal cache large enough for all of them and smaller.

A portal is active when a message went through it: the remote -> Matrix path looks the
portal up (`Portals.ensure`, which fills the portal cache, `bridge.portal_cache_size`) and
sends into its room, which first reads the room's membership, power levels and create event
from the Matrix state store (mautrix's `ensure_joined` and power-level check; the bridge's
`CachedASStateStore` keeps a copy of them). The bench does exactly those steps, without the
HTTP send itself, for `active` portals of the start-up database that no rule touched.

Three figures at each checkpoint (1k, 2k, 5k, 10k active), each after `gc.collect()`:
- `rss_mib`: the RSS growth since before the first portal, from a run without tracing in a
  process of its own (what an admin sees; in the bench's process, the memory the earlier
  bridges freed would take the new portals without the RSS growing; it still reads low
  when the bridge's own start freed much, as 10,000 rules that cannot join do);
- `heap_mib`: live Python allocations (tracemalloc) since then, from a second, traced run;
- `portal_cache_mib` / `state_cache_mib`: what the portal cache and the state store's copy
  hold, by walking their objects (the attribution of the heap growth).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import sys
import tracemalloc
from collections.abc import Iterable
from pathlib import Path
from types import FunctionType, ModuleType
from typing import Any

from mautrix.types import EventType, RoomID

from bridge.app import Bridge
from bridge.configure import load_config
from bridge.networks.base import RemoteRoom

from .endpoints import NETWORK, BenchConnector

CHECKPOINTS = (1000, 2000, 5000, 10_000)
# Where `python -m bench.active_portals` runs from (the bench package's parent).
_ROOT = Path(__file__).resolve().parents[1]
MIB = 1024 * 1024


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def held_bytes(roots: Iterable[Any]) -> int:
    """Bytes of the objects reachable from `roots` (each counted once); classes, modules
    and functions are shared with the rest of the program and not counted."""
    seen: set[int] = set()
    stack = list(roots)
    total = 0
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, type | ModuleType | FunctionType):
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        stack.extend(gc.get_referents(obj))
    return total


class _Nowhere:
    def record(self, tag: str, at: float | None = None) -> None:
        pass


async def _seed_room_state(bridge: Bridge, rooms: list[RoomID]) -> None:
    """What the state store holds for a portal the bridge made: the bot joined, the power
    levels and create event of the room it created (so no send needs the homeserver)."""
    bot = bridge.router.portals.bot_intent.mxid  # type: ignore[union-attr]
    levels = json.dumps({"users": {bot: 100}, "users_default": 0, "events_default": 0,
                         "state_default": 50, "ban": 50, "kick": 50, "redact": 50,
                         "invite": 0, "events": {"m.room.name": 50,
                                                 "m.room.power_levels": 100}})
    db = bridge.storage.db
    for start in range(0, len(rooms), 5000):
        batch = rooms[start:start + 5000]
        async with db.acquire() as conn, conn.transaction():
            await conn.executemany(
                "INSERT INTO mx_room_state (room_id, is_encrypted, has_full_member_list, "
                "power_levels, create_event) VALUES ($1, false, false, $2, $3) "
                "ON CONFLICT (room_id) DO NOTHING",
                [(room, levels, json.dumps({
                    "type": "m.room.create", "state_key": "", "sender": bot, "room_id": room,
                    "event_id": f"$create{start + n}", "origin_server_ts": 0,
                    "content": {"room_version": "10", "creator": bot}}))
                 for n, room in enumerate(batch)])
            await conn.executemany(
                "INSERT INTO mx_user_profile (room_id, user_id, membership) "
                "VALUES ($1, $2, 'join') ON CONFLICT (room_id, user_id) DO NOTHING",
                [(room, bot) for room in batch])


async def _make_active(bridge: Bridge, remote_id: str) -> None:
    """What a remote message does in its portal before the HTTP send (router
    `_remote_message`, then mautrix's `send_message_event`)."""
    portals = bridge.router.portals  # type: ignore[union-attr]
    portal = await portals.ensure(NETWORK, RemoteRoom(remote_id), None)
    assert portal.mxid is not None
    intent = portals.bot_intent
    await intent.ensure_joined(portal.mxid)
    await intent._ensure_has_power_level_for(portal.mxid, EventType.ROOM_MESSAGE)


def _caches(bridge: Bridge) -> tuple[list[Any], list[Any]]:
    portals = bridge.router.portals  # type: ignore[union-attr]
    state = bridge.storage.state_store
    return ([portals._by_remote, portals._by_mxid],
            [state._members, state._power_levels, state._creates, state._parsed,
             state._writes, getattr(state, "_recent", {})])


async def _run(config: Path, first: int, active: int, traced: bool) -> dict[str, Any]:
    bridge = Bridge(load_config(str(config)), [BenchConnector(_Nowhere())])
    await bridge.start()
    try:
        # Sessions and rules open in the background after ready: let them finish first.
        if bridge._activation is not None:
            await asyncio.gather(bridge._activation, return_exceptions=True)
        portals = bridge.router.portals  # type: ignore[union-attr]
        remote_ids = [f"room{first + i}" for i in range(active)]
        rooms = [RoomID(f"!portal{first + i}:localhost") for i in range(active)]
        await _seed_room_state(bridge, rooms)
        portal_roots, state_roots = _caches(bridge)
        gc.collect()
        if traced:
            tracemalloc.start()
        rss0 = rss_mib()
        heap0 = tracemalloc.get_traced_memory()[0] if traced else 0
        portal0, state0 = held_bytes(portal_roots), held_bytes(state_roots)
        points = []
        done = 0
        for checkpoint in (c for c in CHECKPOINTS if c <= active):
            for remote_id in remote_ids[done:checkpoint]:
                await _make_active(bridge, remote_id)
            done = checkpoint
            gc.collect()
            point: dict[str, Any] = {"active": checkpoint, "portals_cached": portals.cached,
                                     "rooms_in_state_cache": len(bridge.storage.state_store
                                                                 ._members)}
            if traced:
                point["heap_mib"] = round((tracemalloc.get_traced_memory()[0] - heap0) / MIB, 2)
                point["portal_cache_mib"] = round((held_bytes(portal_roots) - portal0) / MIB, 2)
                point["state_cache_mib"] = round((held_bytes(state_roots) - state0) / MIB, 2)
            else:
                point["rss_mib"] = round(rss_mib() - rss0, 2)
            points.append(point)
        if traced:
            tracemalloc.stop()
        return {"points": points, "max_cached": portals.max_cached}
    finally:
        if tracemalloc.is_tracing():
            tracemalloc.stop()
        await bridge.stop()


async def active_portal_memory(configs: dict[int, Path], portals: int, personas: int,
                               active: int = 10_000) -> dict[str, Any] | None:
    """`configs`: a bridge config per portal cache size, on the start-up database of
    `portals` portals whose first `personas` have rules (those rooms are left alone)."""
    first = personas if portals - personas >= active else 0
    active = min(active, portals - first)
    if active < 1000:
        return None
    result: dict[str, Any] = {"active_portals": active}
    for size, config in configs.items():
        rss = await _run_apart(config, first, active)
        heap = await _run(config, first, active, traced=True)
        points = [{**r, **h} for r, h in zip(rss["points"], heap["points"], strict=True)]
        last = points[-1]
        per_1000 = {key: round(last[key] / (last["active"] / 1000), 3)
                    for key in ("rss_mib", "heap_mib", "portal_cache_mib", "state_cache_mib")}
        result[f"portal_cache_size_{size}"] = {
            "points": points, "per_1000_active": per_1000,
            # Growth after the cache filled: zero when memory is bounded by the cache size.
            "heap_mib_after_cache_full": _growth_after(points, size, "heap_mib"),
            "portal_cache_mib_after_cache_full": _growth_after(points, size,
                                                               "portal_cache_mib")}
    return result


def _growth_after(points: list[dict[str, Any]], size: int, key: str) -> float | None:
    """How much `key` grew from the first checkpoint at or past the cache size to the last."""
    full = [p for p in points if p["active"] >= size]
    if len(full) < 2:
        return None
    return round(full[-1][key] - full[0][key], 2)


async def _run_apart(config: Path, first: int, active: int) -> dict[str, Any]:
    """`_run` without tracing, in a new Python process."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.active_portals", str(config), str(first), str(active),
        cwd=_ROOT, stdout=asyncio.subprocess.PIPE)
    out, _ = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"the RSS run failed (exit status {process.returncode})")
    return json.loads(out.decode().strip().splitlines()[-1])  # the last line: after any log


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="One RSS run (bench.active_portals).")
    parser.add_argument("config", type=Path)
    parser.add_argument("first", type=int)
    parser.add_argument("active", type=int)
    args = parser.parse_args(argv)
    # Rules that cannot join the bench network would each log a warning.
    logging.getLogger("relayforge").setLevel(logging.ERROR)
    print(json.dumps(asyncio.run(_run(args.config, args.first, args.active, traced=False))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
