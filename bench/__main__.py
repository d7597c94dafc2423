"""Relaying through RelayForge against the bare homeserver, on one real Synapse, in one run.

    .venv/bin/python -m bench [--n 300] [--concurrency 10] [--burst 200]
                              [--database postgres://user:pass@host/empty_db]

Needs Synapse (the `sandbox` or `test` extra). Prints a JSON summary and writes it to
bench/results/latest.json. Every bridge figure comes with its baseline from the same run and
its ratio to it; the ratios are what to compare between runs and machines.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import importlib.util
import inspect
import json
import logging
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
#: What `--parts` can choose; those after "backfill" need no relaying set-up.
PARTS = ("relay", "backfill", "first_contact", "idle_rss", "message_map", "load", "startup")
#: What runs without --parts: the load figure takes hours at its full size on a small
#: machine, so it is asked for by name.
DEFAULT_PARTS = tuple(part for part in PARTS if part != "load")
#: Remote -> Matrix: the bridge's throughput at least this share of the raw baseline's.
TARGET_RATIO = 0.97
#: Matrix -> remote: what the bridge adds at most, as a share of the baseline's latency.
ADDED_MEDIAN_TARGET = 0.05
ADDED_P95_TARGET = 0.10
METHOD = {
    "remote_to_matrix": "N messages over `lanes` rooms (one sender each, in order per room, "
    "rooms in parallel), timed until a person's /sync showed all; baseline: an appservice "
    "ghost of the bridge's own registration PUTs them itself; ratio = bridge/baseline "
    "(higher is better)",
    "matrix_to_remote": "a person sends one message at a time; baseline: until a bare second "
    "appservice receives the transaction; bridge: until the connector's send_message is "
    "called; samples alternate; ratio = bridge/baseline (lower is better)",
    "matrix_to_remote_burst": "the same, with all messages sent at once; per-message latency "
    "from its own send, pooled over `repeats` bursts each in alternating order; drain = first "
    "send to last delivery (mean)",
    "figures": "one row per relay figure: the bridge's value, its baseline from the same run, "
    "the ratio and the target it is held to (throughput: ratio >= target; latency: added "
    "share of the baseline <= target)",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=300,
                        help="messages per throughput run and latency samples (default 300)")
    parser.add_argument("--concurrency", type=int, default=10,
                        help="parallel rooms/senders in the concurrent runs (default 10)")
    parser.add_argument("--lanes", default="1,10,100",
                        help="remote -> Matrix with this many rooms at once, comma-separated "
                        "(default 1,10,100)")
    parser.add_argument("--burst", type=int, default=200,
                        help="messages a person sends at once for the burst latency")
    parser.add_argument("--repeats", type=int, default=2,
                        help="throughput runs and bursts per side, in alternating order "
                        "(default 2)")
    parser.add_argument("--database", help="the bridge's database URI (default: SQLite in "
                        "the run's directory); a PostgreSQL database should be empty")
    parser.add_argument("--workdir", type=Path,
                        help="keep Synapse, configs and logs here (default: a temporary "
                        "directory, removed afterwards)")
    parser.add_argument("--profile", type=Path,
                        help="write a cProfile of the bridge's concurrent relay runs here")
    parser.add_argument("--no-save", action="store_true",
                        help="only print; do not write bench/results/latest.json")
    parser.add_argument("--parts", default=",".join(DEFAULT_PARTS),
                        help=f"which measurements, comma-separated (default all: "
                        f"{','.join(PARTS)})")
    parser.add_argument("--first-contact", type=int, default=10,
                        help="new people (samples) for the first-contact figure")
    parser.add_argument("--portals", type=int, default=100_000,
                        help="portals in the start-up database (default 100000)")
    parser.add_argument("--personas", type=int, default=10_000,
                        help="active personas, each with one active rule, in it (10000)")
    parser.add_argument("--map-rows", type=int, default=1_000_000,
                        help="message map rows for the map figure (default 1000000)")
    parser.add_argument("--postgres-server",
                        help="also the message map and the load on PostgreSQL: a server URI "
                        "such as postgres://user@127.0.0.1:5432 (a throwaway database is made)")
    parser.add_argument("--load-rooms", type=int, default=1000,
                        help="Slack channels mapped for the load figure (default 1000)")
    parser.add_argument("--load-messages", type=int, default=20,
                        help="messages per room in each direction for the load (default 20)")
    args = parser.parse_args(argv)
    if args.load_rooms < 1 or args.load_messages < 1:
        parser.error("--load-rooms and --load-messages must be at least 1")
    if args.n < 20 or args.concurrency < 1 or args.burst < 1 or args.repeats < 1:
        parser.error("--n must be at least 20; --concurrency, --burst, --repeats at least 1")
    args.parts = [part.strip() for part in args.parts.split(",") if part.strip()]
    try:
        args.lanes = sorted({int(n) for n in args.lanes.split(",") if n.strip()})
    except ValueError:
        parser.error("--lanes: comma-separated numbers of rooms, such as 1,10,100")
    if not args.lanes or args.lanes[0] < 1:
        parser.error("--lanes: at least one room")
    if unknown := set(args.parts) - set(PARTS):
        parser.error(f"--parts: unknown {', '.join(sorted(unknown))}; known: {', '.join(PARTS)}")
    return args


def outbound_queue_in_use() -> bool:
    """Whether the durable outbound queue exists and the bridge wires it in. Decides only how
    the burst figure is labelled: the measurement is the same either way."""
    if importlib.util.find_spec("bridge.core.delivery") is None:
        return False
    import bridge.app_wiring
    import bridge.core.router

    sources = inspect.getsource(bridge.app_wiring) + inspect.getsource(bridge.core.router)
    return "delivery" in sources and ("core.delivery" in sources or ".delivery import"
                                      in sources)


async def run(args: argparse.Namespace, directory: Path) -> dict[str, Any]:
    # Imported here so `--help` works without Synapse or a configured bridge.
    from .harness import Harness

    h = Harness(directory, args.database)
    try:
        await h.start()
        results: dict[str, Any] = {}
        if "first_contact" in args.parts:
            from .first_contact import first_contact

            results["first_contact"] = await first_contact(h, args.first_contact)
        if "idle_rss" in args.parts:
            from .idle import idle_rss

            results["idle_rss"] = await idle_rss(h, directory)
        if "relay" in args.parts:
            results.update(await relay(h, args))
        if "backfill" in args.parts:
            from .backfill import backfill_figure

            results["backfill"] = await backfill_figure(h, args.n)
        results["figures"] = figures(results)
        from . import scale

        if "message_map" in args.parts:
            results["message_map"] = await scale.message_maps(directory, args.map_rows,
                                                              args.postgres_server)
        if "load" in args.parts:
            from .load import load_figure

            # Its own Synapse, Slack fake and bridge: the relay harness stays as it is.
            results["load"] = {"sqlite": await load_figure(
                args.load_rooms, args.load_messages, None, directory / "load-sqlite")}
            if args.postgres_server:
                results["load"]["postgres"] = await load_figure(
                    args.load_rooms, args.load_messages, args.postgres_server,
                    directory / "load-postgres")
        if "startup" in args.parts:
            summary = setup(h, args)
            assert h.bridge is not None
            await h.bridge.stop()  # the start-up bridges take its place on the homeserver
            results["startup"] = await scale.startup(
                directory / "config.yaml", directory, args.portals, args.personas,
                postgres=args.postgres_server, profile=args.profile)
            return {"setup": summary, **results, "method": METHOD}
        return {"setup": setup(h, args), **results, "method": METHOD}
    except Exception:
        print(h.synapse_log_tail(), file=sys.stderr)
        raise
    finally:
        await h.stop()


def setup(h: Any, args: argparse.Namespace) -> dict[str, Any]:
    import mautrix
    import synapse

    import bridge

    assert h.watcher is not None
    return {
        "relayforge": bridge.__version__, "mautrix": mautrix.__version__,
        "synapse": synapse.__version__, "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "database": "postgres" if args.database else "sqlite",
        "n": args.n, "concurrency": args.concurrency,
        "appservice_rate_limited": h.registration["rate_limited"],
        "sync_gaps": h.watcher.limited,
    }


async def relay(h: Any, args: argparse.Namespace) -> dict[str, Any]:
    from . import measure

    most = max(args.lanes[-1], args.concurrency)
    lanes = await measure.prepare(h, most)
    await measure.warm_up(h, lanes, max(20, args.n // 5), min(most, 10))

    profiler = cProfile.Profile() if args.profile else None
    by_lanes: dict[str, Any] = {}
    for count in args.lanes:
        if profiler and count > 1:
            profiler.enable()
        # At least two messages per room, so each room relays one after another too.
        by_lanes[str(count)] = await measure.remote_to_matrix(
            h, lanes, max(args.n, 2 * count), count, args.repeats)
        if profiler:
            profiler.disable()
    if profiler:
        profiler.dump_stats(args.profile)
    sequential = by_lanes.get("1")
    concurrent = by_lanes.get(str(args.concurrency)) or by_lanes[str(args.lanes[-1])]

    probe_room = await measure.make_probe_room(h)
    latency = await measure.matrix_to_remote(h, lanes.portals[0], probe_room, args.n,
                                             warm=10)
    queue = outbound_queue_in_use()
    # The queue's per-message send-status event is part of what a burst costs: say
    # whether it was on.
    settings = getattr(getattr(h.bridge, "delivery", None), "settings", None)
    loaded = await measure.matrix_to_remote_burst(h, lanes.portals[0], probe_room,
                                                  args.burst, queue, args.repeats)
    return {
        "remote_to_matrix": {
            "target_ratio": TARGET_RATIO,
            "sequential": sequential,
            "concurrent": concurrent,
            "by_lanes": {count: {k: v for k, v in result.items() if k != "runs"}
                         for count, result in by_lanes.items()},
        },
        "matrix_to_remote": latency,
        "matrix_to_remote_burst": {
            **loaded, "queue_status_events": getattr(settings, "status_events", None),
            "status_every_send": getattr(settings, "status_every_send", None)},
    }


def figures(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each relay figure on one row with its baseline, ratio and target: the table to compare
    between runs (the details stay in their own sections)."""
    rows: list[dict[str, Any]] = []
    for lanes, run in (results.get("remote_to_matrix", {}).get("by_lanes") or {}).items():
        rows.append({"figure": f"remote_to_matrix {lanes} room(s) msgs/s",
                     "bridge": run["bridge_msgs_per_s"], "baseline": run["baseline_msgs_per_s"],
                     "ratio": run["ratio"], "target": f">= {TARGET_RATIO}",
                     "met": run["ratio"] >= TARGET_RATIO})
    for name in ("matrix_to_remote", "matrix_to_remote_burst"):
        if (latency := results.get(name)) is None:
            continue
        for stat, target in (("median", ADDED_MEDIAN_TARGET), ("p95", ADDED_P95_TARGET)):
            base, via = latency["baseline_ms"][stat], latency["bridge_ms"][stat]
            added = round((via - base) / base, 3)
            row = {"figure": f"{name} {stat} ms", "bridge": via, "baseline": base,
                   "ratio": latency["ratio"][stat], "added_share": added}
            if name == "matrix_to_remote":  # the burst is reported, not held to a target
                row.update(target=f"added <= {target:.0%}", met=added <= target)
            rows.append(row)
    if (backfill := results.get("backfill")) is not None:
        rows.append({"figure": "backfill msgs/s", "bridge": backfill["backfill_msgs_per_s"],
                     "baseline": backfill["baseline_msgs_per_s"], "ratio": backfill["ratio"]})
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """The figures as aligned text, for the closing note."""
    lines = [f"{'figure':40} {'bridge':>9} {'baseline':>9} {'ratio':>6}  target"]
    for row in rows:
        met = "" if "met" not in row else (" (met)" if row["met"] else " (NOT met)")
        lines.append(f"{row['figure']:40} {row['bridge']:>9} {row['baseline']:>9} "
                     f"{row['ratio']:>6}  {row.get('target', '')}{met}")
    return "\n".join(lines)


def compact(summary: dict[str, Any]) -> dict[str, Any]:
    """The printed summary leaves out each throughput run, which the saved file keeps."""
    printed = json.loads(json.dumps(summary))
    for mode in ("sequential", "concurrent"):
        (printed.get("remote_to_matrix", {}).get(mode) or {}).pop("runs", None)
    return printed


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # The bridge logs at INFO by default; only problems matter during a benchmark.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
        summary = asyncio.run(run(args, args.workdir.resolve()))
    else:
        with tempfile.TemporaryDirectory(prefix="relayforge-bench-") as tmp:
            summary = asyncio.run(run(args, Path(tmp)))
    print(json.dumps(compact(summary), indent=2))
    if summary.get("figures"):
        # On stderr, so stdout stays one JSON document for whoever reads it.
        print(table(summary["figures"]), file=sys.stderr)
    if not args.no_save:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "latest.json").write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
