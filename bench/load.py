"""Load: many rooms, messages in both directions at once, through a test network.

    .venv/bin/python -m bench.load [--rooms 1000] [--messages 20]
                                   [--postgres-server postgres://user@127.0.0.1:5432]

The network is Slack: the unmodified slack-sdk inside the bridge talks to the tests' wire-level
Slack fake (Web API and Socket Mode over 127.0.0.1). One Matrix person links their Slack account
through the fake's OAuth page and maps the workspace (`map slack TEAM/*`); `--rooms` channels,
each shared with bob (a Slack user), become portals as the person joins them. Then in every
room at once bob posts `--messages` messages on Slack while the person sends as many into the
portal on Matrix, one after another per room and direction.

Counted at both ends afterwards (each portal's history through /messages, each channel's
messages at the fake): every message exactly once, in its room's order. Latency per message:
from the start of its send to its first sighting at the other end (the person's /sync; the
bridge's post landing at the fake). Baseline, in the same run, same rooms, same load: the
homeserver alone carries the same two streams at once, bob's ghost PUTting his messages
itself (seen in the person's /sync) and the bridge bot PUTting the other stream (seen by a
bare second appservice watching every room). Ratios: baseline/bridge throughput (higher is
better; 1.0 = the homeserver is the limit) and bridge/baseline latency (lower is better).

With --postgres-server the bridge's database is a throwaway PostgreSQL database on that
server (made and dropped); without it, SQLite in the run's directory.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import platform
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from bridge.app import Bridge
from bridge.configure import load_config
from bridge.sandbox.synapse import LocalSynapse, free_port

from .endpoints import ProbeAppService
from .harness import (
    SERVER_NAME,
    Harness,
    generate_registration,
    write_bridge_config,
    write_probe_registration,
)
from .measure import percentile

log = logging.getLogger("bench.load")

METHOD = ("`rooms` Slack channels mapped for one linked person (the tests' Slack fake, the "
          "real slack-sdk); in every room at once bob posts `messages` on Slack and the "
          "person sends `messages` on Matrix, one after another per room and direction. "
          "Latency per message: its send's start to its first sighting at the other end "
          "(the person's /sync; the post at the fake). Throughput: messages of a direction "
          "over first send to last arrival. Baseline, same run, same rooms, both streams at "
          "once: bob's ghost PUTs his messages itself (seen in the person's /sync) and the "
          "bridge bot PUTs the other stream (seen by a bare appservice watching every room). "
          "Counts read back afterwards from each portal's history and each channel.")


class SlackHarness(Harness):
    """The benchmark harness with the Slack network on, pointed at the fake, and a probe
    appservice that watches every room (so it sees the portals' traffic too)."""

    def __init__(self, directory: Path, db_uri: str | None) -> None:
        super().__init__(directory, db_uri)
        from tests.fakes.slack import FakeSlack

        self.slack = FakeSlack()

    async def start(self) -> None:
        from tests.support.slack import slack_settings

        await self.slack.start()
        hs_port, as_port, probe_port = free_port(), free_port(), free_port()
        config_path = write_bridge_config(self.directory, hs_port, as_port, self.db_uri)
        config = YAML(typ="safe").load(config_path.read_text())
        config["networks"]["slack"] = slack_settings(
            self.slack, f"http://127.0.0.1:{as_port}/link/slack/callback")
        with config_path.open("w") as stream:
            YAML().dump(config, stream)
        registration_path = self.directory / "registration.yaml"
        self.registration = generate_registration(config_path, registration_path)
        self.as_token = self.registration["as_token"]
        probe_path = self.directory / "probe-registration.yaml"
        probe = write_probe_registration(probe_path, probe_port)
        # Interested in every room: the baseline's Matrix -> remote stream is the homeserver
        # handing the portals' events to an appservice that does nothing with them.
        probe["namespaces"]["rooms"] = [{"regex": "!.*", "exclusive": False}]
        with probe_path.open("w") as stream:
            YAML().dump(probe, stream)
        self.probe_as_token = probe["as_token"]

        self.synapse = LocalSynapse(self.directory / "synapse", hs_port, SERVER_NAME,
                                    [registration_path, probe_path])
        log.warning("Starting Synapse")
        await asyncio.to_thread(self.synapse.start)
        self.probe = ProbeAppService(probe["hs_token"], self.delivered)
        await self.probe.start("127.0.0.1", probe_port)
        self.bridge = Bridge(load_config(str(config_path)), [self.connector])
        await self.bridge.start()
        await self.bridge.connectors_started()
        # An admin, only to lift the linked person's message rate limit.
        info = await asyncio.to_thread(self.synapse.register_user,
                                       f"loadadmin{secrets.token_hex(3)}",
                                       secrets.token_urlsafe(12), True)
        self.person = self.client(info["access_token"])
        await self.person.whoami()

    async def stop(self) -> None:
        await super().stop()
        await self.slack.stop()


def latency_ms(started: dict[str, float], arrived: dict[str, float]) -> dict[str, float]:
    ms = [(arrived[t] - started[t]) * 1000 for t in arrived]
    return {"p50": round(percentile(ms, 50), 1), "p95": round(percentile(ms, 95), 1),
            "p99": round(percentile(ms, 99), 1), "max": round(max(ms), 1),
            "samples": len(ms)}


def figures(started: dict[str, float], first_send: float, arrived: dict[str, float]
            ) -> dict[str, Any]:
    last = max(arrived.values())
    return {"msgs_per_s": round(len(arrived) / (last - first_send), 1),
            "drain_s": round(last - first_send, 2),
            "latency_ms": latency_ms(started, arrived)}


async def measure(h: SlackHarness, rooms: int, messages: int) -> dict[str, Any]:
    from tests.fakes.slack.scenario import build_world
    from tests.support import load
    from tests.support.matrix import MatrixUser
    from tests.support.slack import link_slack

    assert h.bridge is not None and h.bridge.appservice is not None and h.synapse is not None
    assert h.person is not None
    slack, world = h.slack, build_world(h.slack)
    bot = h.bridge.appservice.intent.mxid
    started = time.perf_counter()
    alice = await MatrixUser.register(h.synapse, "loadalice")
    try:
        room = await link_slack(alice, bot, slack, world.alice)
        await alice.send_text(room, f"map slack {world.team.id}/* --profile Jobb")
        await alice.wait_for_notice(room, bot, "will be mapped")
    finally:
        await alice.close()
    person = h.client(alice.client.api.token, connections=1000)
    await person.whoami()
    await h.person.unlimit_messages(alice.mxid)
    matrix = load.MatrixSide(person)
    remote = load.SlackSide(slack, world.alice)
    await matrix.start()
    await remote.start()
    try:
        lanes = await load.map_channels(slack, world.team, world.alice, world.bob, matrix,
                                        rooms)
        mapped = time.perf_counter()
        log.warning("%d portals mapped in %.0f s", rooms, mapped - started)
        remote.watch([lane.channel for lane in lanes])
        ghost_id = await load.warm_up(slack, world.bob, person, matrix, remote, lanes)

        # The homeserver alone, both streams at once, into the same rooms.
        ghost = h.client(h.as_token, ghost_id, connections=1000)
        bot_client = h.client(h.as_token, bot, connections=1000)
        base = await load.both_ways(rooms, messages, load.matrix_sender(ghost, lanes),
                                    load.matrix_sender(bot_client, lanes))
        base_in = await matrix.visible.wait(base.all_to_matrix(), load.DEADLINE)
        base_out = await h.delivered.wait(base.all_to_remote(), load.DEADLINE)
        # Logged as it comes, so a run stopped half-way still leaves its figures.
        log.warning("baseline: %s", json.dumps({
            "to_matrix": figures(base.started, base.first_send, base_in),
            "to_remote": figures(base.started, base.first_send, base_out)}))

        burst = await load.both_ways(rooms, messages,
                                     load.slack_sender(slack, world.bob, lanes),
                                     load.matrix_sender(person, lanes))
        via_in = await matrix.visible.wait(burst.all_to_matrix(), load.DEADLINE)
        via_out = await remote.visible.wait(burst.all_to_remote(), load.DEADLINE)
        log.warning("bridge: %s", json.dumps({
            "to_matrix": figures(burst.started, burst.first_send, via_in),
            "to_remote": figures(burst.started, burst.first_send, via_out)}))
        # A late echo or copy would come before this round's message in its room.
        await load.warm_up(slack, world.bob, person, matrix, remote, lanes)
        counted = await load.count(person, lanes, burst, world.alice, alice.mxid)
    finally:
        await remote.stop()
        await matrix.stop()

    baseline = {"to_matrix": figures(base.started, base.first_send, base_in),
                "to_remote": figures(base.started, base.first_send, base_out)}
    bridge = {"to_matrix": figures(burst.started, burst.first_send, via_in),
              "to_remote": figures(burst.started, burst.first_send, via_out)}
    ratios = {}
    for direction in ("to_matrix", "to_remote"):
        b, v = baseline[direction], bridge[direction]
        ratios[direction] = {
            "throughput": round(v["msgs_per_s"] / b["msgs_per_s"], 3),
            **{f"latency_{p}": round(v["latency_ms"][p] / b["latency_ms"][p], 2)
               for p in ("p50", "p95", "p99")}}
    return {"rooms": rooms, "messages_per_room_each_way": messages,
            "setup_s": round(mapped - started, 1),
            "counts": counted, "baseline": baseline, "bridge": bridge, "ratio": ratios,
            "sync_gaps": matrix.limited, "method": METHOD}


async def load_figure(rooms: int = 1000, messages: int = 20,
                      postgres_server: str | None = None,
                      directory: Path | None = None) -> dict[str, Any]:
    """The figure for `python -m bench`: its own Synapse, Slack fake and bridge; on
    PostgreSQL when `postgres_server` (a server URI) is given, else SQLite."""
    if rooms < 1 or messages < 1:
        raise ValueError("rooms and messages must be at least 1")
    if directory is None:
        with tempfile.TemporaryDirectory(prefix="relayforge-bench-load-") as tmp:
            return await load_figure(rooms, messages, postgres_server, Path(tmp))
    await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
    database = None
    if postgres_server:
        import asyncpg

        name = f"relayforge_bench_load_{secrets.token_hex(4)}"
        admin = await asyncpg.connect(_admin_dsn(postgres_server))
        await admin.execute(f'CREATE DATABASE "{name}"')
        database = f"{postgres_server.rstrip('/')}/{name}"
    h = SlackHarness(directory, database)
    began = time.perf_counter()
    try:
        await h.start()
        result = await measure(h, rooms, messages)
    except Exception:
        print(h.synapse_log_tail(), file=sys.stderr)
        raise
    finally:
        await h.stop()
        if postgres_server:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.close()
    return {"database": "postgres" if postgres_server else "sqlite",
            "python": platform.python_version(),
            "run_s": round(time.perf_counter() - began, 1), **result}


def _admin_dsn(server: str) -> str:
    """The server URI, with the maintenance database when it names none."""
    head, _, tail = server.rstrip("/").partition("://")
    return server if "/" in tail else f"{head}://{tail}/postgres"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rooms", type=int, default=1000, help="portals (default 1000)")
    parser.add_argument("--messages", type=int, default=20,
                        help="messages per room in each direction (default 20)")
    parser.add_argument("--postgres-server",
                        help="run on PostgreSQL: a server URI such as "
                        "postgres://user@127.0.0.1:5432 (a throwaway database is made)")
    args = parser.parse_args(argv)
    if args.rooms < 1 or args.messages < 1:
        parser.error("--rooms and --messages must be at least 1")
    if args.postgres_server and not args.postgres_server.startswith(("postgres://",
                                                                     "postgresql://")):
        parser.error("--postgres-server: a URI such as postgres://user@127.0.0.1:5432")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    figure = asyncio.run(load_figure(args.rooms, args.messages, args.postgres_server))
    print(json.dumps({"load": figure}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
