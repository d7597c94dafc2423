"""Matrix -> remote throughput with 1, 2 and 4 bridge workers on one PostgreSQL, on one real
Synapse, in one run: the ratio of each to one worker (higher is better).

    .venv/bin/python -m bench.workers [--n 240] [--rooms 8] [--counts 1,2,4]
                                      [--postgres postgres://127.0.0.1/postgres]

Each count gets a fresh database and its own worker processes (`bridge.workers.enabled`)
behind one appservice address (a round-robin load balancer, as a deployment would have). One
person sends N messages over `rooms` portals at once (in order per room, rooms in parallel);
the clock runs from the first send until the test network has received all of them. With two
workers or more, one more burst follows in which the worker sending the first room is killed
(SIGKILL) a quarter of the way: what the network then received is counted (lost, duplicated,
rooms out of order; 0 each is the expected result). The wire test network and the load
balancer are the tests' own (tests/support), so the benchmark measures exactly what the
worker tests check.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from ruamel.yaml import YAML

from bridge.sandbox.synapse import LocalSynapse, free_port

from .harness import generate_registration
from .matrix import RawClient

ROOT = Path(__file__).resolve().parent.parent
SERVER_NAME = "localhost"
log = logging.getLogger("bench.workers")


def _config(directory: Path, name: str, hs_port: int, as_port: int, port: int,
            db_uri: str, worker: str | None, database_files: str = "seed") -> Path:
    """`database_files`: the name of the vault key and audit checkpoint files, one pair per
    database (the workers on it share them; a key made for another database is refused)."""
    config: dict[str, Any] = {
        "homeserver": {"address": f"http://127.0.0.1:{hs_port}", "domain": SERVER_NAME},
        "appservice": {"address": f"http://127.0.0.1:{as_port}", "hostname": "127.0.0.1",
                       "port": port, "id": "relayforge-bench", "bot_username": "rfbench",
                       "as_token": "", "hs_token": ""},
        "bridge": {"permissions": {"*": "relay", SERVER_NAME: "user"},
                   "encryption": {"allow": False}},
        "database": {"uri": db_uri},
        "vault": {"file": {"key_path": str(directory / f"{database_files}.key")}},
        "audit": {"checkpoint_file": str(directory / f"{database_files}.checkpoint")},
        "delivery": {"status_events": False},
        "networks": {"loopback": {"username_template": "loopback_{id}",
                                  "displayname_template": "{displayname} (Loopback)"}},
    }
    if worker is not None:
        config["bridge"]["workers"] = {"enabled": True, "id": worker, "lease_seconds": 5}
    path = directory / f"{name}.yaml"
    with path.open("w") as stream:
        YAML().dump(config, stream)
    return path


class Run:
    """One worker count: a fresh database, its workers, the wire network and the balancer."""

    def __init__(self, directory: Path, synapse: LocalSynapse, registration: dict[str, Any],
                 as_port: int, db_uri: str, count: int) -> None:
        from tests.support.wirenet import WireServer
        from tests.support.workers import LoadBalancer

        self.directory, self.synapse, self.count = directory, synapse, count
        self.ports = [free_port() for _ in range(count)]
        self.wire = WireServer()
        self.balancer = LoadBalancer(as_port, self.ports)
        self.db_uri = db_uri
        self.configs = []
        for n, port in enumerate(self.ports, start=1):
            path = _config(directory, f"w{count}-{n}", synapse.port, as_port, port, db_uri,
                           f"w{n}", database_files=f"workers-{count}")
            data = YAML(typ="safe").load(path.read_text())
            data["appservice"]["as_token"] = registration["as_token"]
            data["appservice"]["hs_token"] = registration["hs_token"]
            with path.open("w") as stream:
                YAML().dump(data, stream)
            self.configs.append(path)
        self.processes: list[subprocess.Popen] = []

    async def start(self) -> None:
        await self.wire.start()
        await self.balancer.start()
        # The first worker makes the new database's vault; the others then start together
        # (started all at once, a second one can find the first one's new master key file
        # before the database records it, and refuse it as another database's key).
        await self._spawn([0])
        await self._spawn(list(range(1, len(self.configs))))

    async def _spawn(self, workers: list[int]) -> None:
        for n in workers:
            log_file = (self.directory / f"{self.configs[n].stem}.log").open("a")
            self.processes.append(subprocess.Popen(  # noqa: ASYNC220 (returns at once)
                [sys.executable, "-m", "tests.support.bridge_process", str(self.configs[n]),
                 self.wire.url, *([] if n == 0 else ["send-only"])],
                cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT))
        async with aiohttp.ClientSession() as session:
            for n in workers:
                try:
                    await _wait_ready(
                        session, f"http://127.0.0.1:{self.ports[n]}/_matrix/mau/ready",
                        self.processes[n])
                except RuntimeError as e:
                    log_file = self.directory / f"{self.configs[n].stem}.log"
                    tail = log_file.read_text(errors="replace").splitlines()[-30:]
                    raise RuntimeError(f"{e}; its log ends:\n" + "\n".join(tail)) from None

    async def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                await asyncio.to_thread(process.wait, 30)
            except subprocess.TimeoutExpired:
                process.kill()
        await self.balancer.stop()
        await self.wire.stop()

    async def portals(self, person: RawClient, rooms: int) -> list[tuple[str, str]]:
        """Rooms made from the network side (one message each), joined by the person."""
        made = []
        db = await asyncpg.connect(self.db_uri)
        try:
            for i in range(rooms):
                remote = f"bench-{secrets.token_hex(3)}-{i}"
                await self.wire.emit(remote, "rita", "hello", person.user_id or "")
                mxid = None
                for _ in range(600):
                    mxid = await db.fetchval("SELECT mxid FROM portal WHERE remote_id=$1",
                                             remote)
                    if mxid:
                        break
                    await asyncio.sleep(0.1)
                assert mxid, f"portal {remote} never made"
                await person.join(mxid)
                made.append((remote, mxid))
        finally:
            await db.close()
        return made

    async def throughput(self, person: RawClient, portals: list[tuple[str, str]],
                         n: int) -> float:
        per_room = max(1, n // len(portals))
        total = per_room * len(portals)
        tag = secrets.token_hex(3)
        before = len(self.wire.received)

        async def lane(mxid: str) -> None:
            for i in range(per_room):
                await person.send_text(mxid, f"{tag} {i}")

        started = time.perf_counter()
        senders = [asyncio.create_task(lane(mxid)) for _, mxid in portals]
        await self.wire.wait(lambda: sum(r["text"].startswith(tag)
                                         for r in self.wire.received[before:]) >= total,
                             f"{total} messages", deadline=600)
        elapsed = time.perf_counter() - started
        await asyncio.gather(*senders)
        return total / elapsed

    async def kill_mid_burst(self, person: RawClient, portals: list[tuple[str, str]],
                             n: int) -> dict[str, int]:
        """N messages over the portals; once a quarter has arrived, the worker sending in the
        first room is killed (SIGKILL). Then a last message in each room, and what the
        network received is counted: lost and duplicated (in order per room or not)."""
        per_room = max(1, n // len(portals))
        tag = secrets.token_hex(3)
        before, refused = len(self.wire.received), self.wire.duplicates

        async def lane(mxid: str) -> None:
            for i in range(per_room):
                await person.send_text(mxid, f"{tag} {i}")

        senders = [asyncio.create_task(lane(mxid)) for _, mxid in portals]
        await self.wire.wait(lambda: sum(r["text"].startswith(tag)
                                         for r in self.wire.received[before:])
                             >= per_room * len(portals) // 4, "a quarter of the burst",
                             deadline=600)
        db = await asyncpg.connect(self.db_uri)
        try:
            owner = await db.fetchval("SELECT owner FROM lease WHERE resource=$1",
                                      f"room:{portals[0][1]}")
        finally:
            await db.close()
        victim = self.processes[int(str(owner).removeprefix("w")) - 1]
        victim.kill()  # kill -9: nothing flushed, its sends in flight
        await asyncio.to_thread(victim.wait)
        await asyncio.gather(*senders)  # the homeserver reaches the other workers meanwhile
        for _, mxid in portals:
            await person.send_text(mxid, f"{tag} end")
        await self.wire.wait(lambda: sum(r["text"] == f"{tag} end"
                                         for r in self.wire.received[before:]) == len(portals),
                             "the whole burst and the last messages", deadline=600)
        lost = duplicated = out_of_order = 0
        for remote, _ in portals:
            texts = [r["text"] for r in self.wire.received[before:] if r["room"] == remote]
            wanted = [f"{tag} {i}" for i in range(per_room)] + [f"{tag} end"]
            lost += len(set(wanted) - set(texts))
            duplicated += len(texts) - len(set(texts))
            out_of_order += texts != wanted and set(texts) == set(wanted)
        return {"messages": per_room * len(portals), "lost": lost, "duplicated": duplicated,
                "rooms_out_of_order": out_of_order,
                "resends_refused_by_idempotency_key": self.wire.duplicates - refused}


async def _wait_ready(session: aiohttp.ClientSession, url: str,
                      process: subprocess.Popen) -> None:
    for _ in range(3000):
        if process.poll() is not None:
            raise RuntimeError(f"the worker behind {url} exited ({process.returncode})")
        try:
            async with session.get(url) as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} never became ready")


async def measure(counts: list[int], n: int, rooms: int, postgres: str,
                  directory: Path) -> dict[str, Any]:
    hs_port, as_port = free_port(), free_port()
    seed = _config(directory, "seed", hs_port, as_port, as_port, "sqlite:unused.db", None)
    registration = generate_registration(seed, directory / "registration.yaml")
    synapse = LocalSynapse(directory / "synapse", hs_port, SERVER_NAME,
                           [directory / "registration.yaml"])
    await asyncio.to_thread(synapse.start)
    admin = await asyncpg.connect(postgres)
    results: dict[str, Any] = {}
    killed: dict[str, dict[str, int]] = {}
    try:
        info = await asyncio.to_thread(synapse.register_user,
                                       f"benchworkers{secrets.token_hex(3)}",
                                       secrets.token_urlsafe(12), True)
        person = RawClient(synapse.url, info["access_token"], None, 1000)
        await person.whoami()
        await person.unlimit_messages(person.user_id or "")
        for count in counts:
            name = f"relayforge_bench_workers_{secrets.token_hex(4)}"
            await admin.execute(f'CREATE DATABASE "{name}"')
            run = Run(directory, synapse, registration, as_port,
                      _database_uri(postgres, name), count)
            try:
                await run.start()
                portals = await run.portals(person, rooms)
                await run.throughput(person, portals, max(rooms, n // 4))  # warm-up
                results[str(count)] = await run.throughput(person, portals, n)
                log.warning("%d worker(s): %.1f messages/s", count, results[str(count)])
                if count > 1:  # last: it leaves one worker fewer
                    killed[str(count)] = await run.kill_mid_burst(person, portals, n)
                    log.warning("%d worker(s), one killed mid-burst: %s", count,
                                killed[str(count)])
            finally:
                await run.stop()
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await person.close()
    finally:
        await admin.close()
        await asyncio.to_thread(synapse.stop)
    base = results[str(counts[0])]
    return {"method": "Matrix -> remote, N messages over `rooms` portals at once, through a "
                      "round-robin load balancer to the workers; messages/s from the first "
                      "send to the last arrival at the network; ratio = workers/1 worker "
                      "(higher is better)",
            "n": n, "rooms": rooms,
            "messages_per_second": {k: round(v, 1) for k, v in results.items()},
            "ratio_to_1": {k: round(v / base, 2) for k, v in results.items()},
            "one_worker_killed_mid_burst": killed}


def _database_uri(admin_dsn: str, name: str) -> str:
    base, _, _ = admin_dsn.rpartition("/")
    return f"{base}/{name}"


async def workers_figure(n: int = 240, rooms: int = 8, counts: tuple[int, ...] = (1, 2, 4),
                         postgres: str = "postgres://127.0.0.1/postgres") -> dict[str, Any]:
    """The figure for `python -m bench` (its own Synapse and databases)."""
    with tempfile.TemporaryDirectory(prefix="relayforge-bench-workers-") as tmp:
        return await measure(list(counts), n, rooms, postgres, Path(tmp))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.workers", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=240)
    parser.add_argument("--rooms", type=int, default=8)
    parser.add_argument("--counts", default="1,2,4")
    parser.add_argument("--postgres", default="postgres://127.0.0.1/postgres",
                        help="a PostgreSQL server's admin DSN: a database per count is made "
                        "and dropped")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    figure = asyncio.run(workers_figure(args.n, args.rooms,
                                        tuple(int(c) for c in args.counts.split(",")),
                                        args.postgres))
    print(json.dumps({"workers": figure}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
