"""Several bridge workers on one PostgreSQL: any of them takes the homeserver's transactions,
each portal's outbound queue and each persona's session is served by one of them at a time,
and what a killed worker held is taken over by the others, losing and duplicating nothing.
SQLite serves one bridge process; a second one on the same database is refused."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest
from mautrix.util.async_db import Database

from bridge.config import ConfigError
from bridge.configure import load_config
from bridge.db import open_database
from bridge.db.vault_key import VaultKeyStore
from bridge.db.vault_secret import VaultSecretStore
from bridge.security.system_keys import audit_mac_key
from bridge.security.vault import Vault
from bridge.security.vault.file_provider import FileKeyProvider

from .support.matrix import DEADLINE
from .support.wirenet import WireServer
from .support.workers import LoadBalancer, free_port
from .test_crash_recovery import ROOT, BridgeProcess, all_messages, open_portal
from .test_xmpp import MUC, body_is, mapped_muc

LEASE_SECONDS = 2  # how long a killed worker's rooms and sessions wait to be taken over


def test_several_workers_on_sqlite_are_a_config_problem(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("homeserver: {address: 'http://localhost:8008', domain: example.org}\n"
                      "appservice: {address: 'http://localhost:29340'}\n"
                      "bridge: {permissions: {'*': user}, workers: {enabled: true}}\n"
                      "database: {uri: 'sqlite:relayforge.db'}\n")
    with pytest.raises(ConfigError) as refused:
        load_config(str(config), for_run=False, environ={})
    assert "several workers need PostgreSQL" in str(refused.value)


async def test_a_second_process_on_one_database_is_refused(start_bridge, homeserver, db_uri,
                                                          tmp_path):
    await start_bridge()
    # Another port, so only the database stands in its way.
    second = homeserver.bridge_config(tmp_path, db_uri, extra={
        "appservice": {"port": free_port()}})
    result = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "bridge", "-c", second.path], cwd=ROOT,
        capture_output=True, text=True, timeout=DEADLINE)
    assert result.returncode == 2, result.stderr
    expected = ("SQLite serves one bridge process" if db_uri.startswith("sqlite:")
                else "another RelayForge process is running on this database")
    assert expected in result.stderr, result.stderr


class Balancer(LoadBalancer):
    """The round robin, or every request to one worker (`pin`), so a test says which worker
    gets the person's next message."""

    def pin(self, worker: int | None) -> None:
        self._next = itertools.cycle(range(len(self.worker_ports)) if worker is None
                                     else [worker])


class Workers:
    """Two bridge workers behind the session's appservice address."""

    def __init__(self, homeserver, db_uri: str, tmp_path: Path, wire_url: str | None,
                 extra: dict | None = None) -> None:
        self.homeserver, self.db_uri = homeserver, db_uri
        self.ports = [free_port(), free_port()]
        self.balancer = Balancer(urlparse(homeserver.appservice_url).port, self.ports)
        self.balancing = False
        self.processes: dict[str, BridgeProcess] = {}
        for n, port in enumerate(self.ports, start=1):
            config = homeserver.bridge_config(tmp_path, db_uri, extra={
                **(extra or {}), "appservice": {"port": port},
                "bridge": {"workers": {"enabled": True, "id": f"w{n}",
                                       "lease_seconds": LEASE_SECONDS}}})
            process = BridgeProcess(Path(config.path), wire_url,
                                    f"http://127.0.0.1:{port}/_matrix/mau/ready",
                                    tmp_path / f"w{n}.log")
            if wire_url and n > 1:  # the wire network's events go to the first one only
                process.command.append("send-only")
            self.processes[f"w{n}"] = process

    async def start(self, *workers: str) -> None:
        """Start the named workers (all by default); the balancer skips those not running."""
        if not self.balancing:
            await self.balancer.start()
            self.balancing = True
        await asyncio.gather(*(process.start() for name, process in self.processes.items()
                               if not workers or name in workers))

    def pin(self, worker: str | None) -> None:
        """Every request to `worker` from now on (None: round robin again)."""
        self.balancer.pin(None if worker is None else list(self.processes).index(worker))

    async def stop(self) -> None:
        for process in self.processes.values():
            process.stop()
        await self.balancer.stop()

    def kill(self, worker: str) -> None:
        process = self.processes[worker]
        assert process.process is not None
        os.kill(process.process.pid, signal.SIGKILL)
        process.process.wait()

    async def owners(self, prefix: str) -> dict[str, str]:
        """Who holds each lease of a kind (what the workers wrote in the database)."""
        db = Database.create(self.db_uri)
        await db.start()
        try:
            rows = await db.fetch("SELECT resource, owner FROM lease WHERE resource LIKE $1",
                                  prefix + "%")
        finally:
            await db.stop()
        return {r["resource"].removeprefix(prefix): r["owner"] for r in rows}


@pytest.fixture
async def postgres_uri(postgres):
    """Several workers need PostgreSQL: these tests have no SQLite variant (that one is
    refused, above)."""
    from .support.servers import unavailable

    if postgres.admin_dsn is None:
        unavailable("no PostgreSQL server answers and none could be started")
    name = f"relayforge_workers_{os.urandom(6).hex()}"
    uri = await postgres.create_database(name)
    yield uri
    await postgres.drop_database(name)


ROOMS, PER_ROOM = 3, 30


async def test_a_worker_killed_mid_burst_loses_and_duplicates_nothing(
        homeserver, postgres_uri, tmp_path, new_user):
    wire = WireServer()
    await wire.start()
    workers = Workers(homeserver, postgres_uri, tmp_path, wire.url)
    try:
        await workers.start()
        alice = await new_user("alice")
        portals = [await open_portal(wire, alice) for _ in range(ROOMS)]

        async def burst(portal: str) -> None:
            for i in range(PER_ROOM):
                await alice.send_text(portal, f"m{i}")

        senders = [asyncio.create_task(burst(portal)) for _, portal in portals]
        await wire.wait(lambda: len(wire.received) >= ROOMS * PER_ROOM // 4,
                        "a quarter of the burst")
        owners = await workers.owners("room:")
        # Kill the worker sending in the first room, with its sends in flight.
        victim = owners[portals[0][1]]
        workers.kill(victim)
        assert len(wire.received) < ROOMS * PER_ROOM, "the burst was over before the kill"
        await asyncio.gather(*senders)  # the homeserver reaches the other worker meanwhile
        for _, portal in portals:
            await alice.send_text(portal, "end")
        await wire.wait(lambda: sum(r["text"] == "end" for r in wire.received) == ROOMS,
                        "the whole burst and the last messages")
        for room, _ in portals:
            texts = [r["text"] for r in wire.received if r["room"] == room]
            assert texts == [f"m{i}" for i in range(PER_ROOM)] + ["end"], room
        # The survivor sends in every room now, the victim's too.
        survivor = next(w for w in workers.processes if w != victim)
        assert set((await workers.owners("room:")).values()) == {survivor}
    finally:
        await workers.stop()
        await wire.stop()


async def test_a_persona_session_is_taken_over_by_the_surviving_worker(
        homeserver, postgres_uri, tmp_path, new_user, prosody, xmpp_peer):
    workers = Workers(homeserver, postgres_uri, tmp_path, None, extra={"networks": {"xmpp": {
        "enabled": True, "ca_file": str(prosody.ca), "nameserver": prosody.nameserver}}})
    try:
        # Linked and mapped while one worker runs (both work on any worker: see the link
        # and map tests below).
        await workers.start("w1")
        alice = await new_user("alice")
        alice_xmpp, bob = await xmpp_peer("alice"), await xmpp_peer("bob")
        await alice_xmpp.stop()  # only its credentials are needed
        muc, portal = await mapped_muc(alice, alice_xmpp, bob, homeserver)
        await workers.start("w2")
        # One session for alice's account, on one worker: bob's message arrives once.
        bob.send(muc, "before")
        await alice.wait_for_event(portal, body_is("before"), "bob's first message")
        sessions = await workers.owners("persona:")
        assert len(sessions) == 1
        owner = next(iter(sessions.values()))
        workers.kill(owner)
        survivor = next(w for w in workers.processes if w != owner)
        bob.send(muc, "while down")  # nobody is in the room for alice now

        async with asyncio.timeout(DEADLINE):
            for _ in range(1_000_000):  # the lease runs out, and the survivor claims it
                if set((await workers.owners("persona:")).values()) == {survivor}:
                    break
                await asyncio.sleep(0.2)
        # The survivor signs in as alice and joins the room again (catching up on what was
        # said while nobody was there): from then on what bob writes arrives, and what alice
        # writes reaches bob.
        async with asyncio.timeout(DEADLINE):
            for n in range(1_000_000):
                bob.send(muc, f"after {n}")
                try:
                    await asyncio.wait_for(alice.wait_for_event(
                        portal, body_is(f"after {n}"), "bob's message", after=None), 2)
                    break
                except TimeoutError:
                    continue  # not in the room yet: this one comes with the catch-up
        await alice.wait_for_event(portal, body_is("while down"), "the missed message",
                                   after=None)
        await alice.send_text(portal, "answer")
        await alice.send_text(portal, "answer done")
        await bob.wait_for(lambda m: m["body"] == "answer done", "alice's answers")
        bob.send(muc, "last")
        await alice.wait_for_event(portal, body_is("last"), "bob's last message")
        # Each message once, in Matrix and on XMPP, though two workers had alice's session.
        bodies = await all_messages(alice, portal)
        for body in ["before", "while down", "answer", "answer done", "last",
                     *(f"after {i}" for i in range(n + 1))]:
            assert bodies.count(body) == 1, (body, bodies)
        said = [m["body"] for m in bob.messages]
        assert said.count("answer") == 1 and said.count("answer done") == 1, said
    finally:
        await workers.stop()


async def test_a_persona_paused_and_resumed_on_either_worker_keeps_bridging(
        homeserver, postgres_uri, tmp_path, new_user, prosody, xmpp_peer):
    """The bot's commands reach whichever worker the homeserver's transaction reaches; the
    session is open on the worker serving the network: a pause there closes it, and a resume
    said to either worker opens it there and rejoins the mapped room."""
    workers = Workers(homeserver, postgres_uri, tmp_path, None, extra={"networks": {"xmpp": {
        "enabled": True, "ca_file": str(prosody.ca), "nameserver": prosody.nameserver}}})
    try:
        await workers.start("w1")  # linked and mapped with one worker (see above)
        alice = await new_user("alice")
        alice_xmpp, bob = await xmpp_peer("alice"), await xmpp_peer("bob")
        await alice_xmpp.stop()
        muc, portal = await mapped_muc(alice, alice_xmpp, bob, homeserver)
        await workers.start("w2")
        room = await alice.open_management_room(homeserver.bot_mxid)
        ref = f"xmpp:{alice_xmpp.jid}"
        # Commands alternate between the workers (with what else the homeserver sends in
        # between): three rounds, so a resume reaches the worker without the session.
        for n in range(3):
            await alice.send_text(room, f"pause {ref}")
            await alice.wait_for_notice(room, homeserver.bot_mxid, f"{ref} is now paused.")
            await alice.send_text(room, f"resume {ref}")
            await alice.wait_for_notice(room, homeserver.bot_mxid, f"{ref} is now active.")
            await alice.send_text(portal, f"to bob {n}")
            await bob.wait_for(lambda m, n=n: m["body"] == f"to bob {n}", "alice's message")
            bob.send(muc, f"to alice {n}")
            await alice.wait_for_event(portal, body_is(f"to alice {n}"), "bob's message")
        assert len(set((await workers.owners("persona:")).values())) == 1
        bodies = await all_messages(alice, portal)
        said = [m["body"] for m in bob.messages]
        for n in range(3):
            assert bodies.count(f"to alice {n}") == 1, bodies
            assert said.count(f"to bob {n}") == 1, said
    finally:
        await workers.stop()


async def test_two_vaults_started_at_once_on_a_new_database_make_one_master_key(
        postgres_uri, tmp_path):
    """Two workers' vaults, started together on one new database with one key file (as two
    processes would, each on its own connections): one master key, and what one seals the
    other opens."""
    storages = [await open_database(postgres_uri), await open_database(postgres_uri)]
    key_file = str(tmp_path / "master.key")
    vaults = [Vault(FileKeyProvider(key_file), s.vault_keys, s.vault_secrets) for s in storages]
    try:
        await asyncio.gather(*(vault.start() for vault in vaults))
        await vaults[0].seal("p1", "xmpp:alice@example.org", "password", "s3cret")
        assert await vaults[1].open_text("p1", "xmpp:alice@example.org", "password") == "s3cret"
        await vaults[1].seal("p2", "xmpp:bob@example.org", "password", "hunter2")
        assert await vaults[0].open_text("p2", "xmpp:bob@example.org", "password") == "hunter2"
        # A restart reads the same key from the file.
        again = Vault(FileKeyProvider(key_file), storages[0].vault_keys,
                      storages[0].vault_secrets)
        await again.start()
        assert await again.open_text("p1", "xmpp:alice@example.org", "password") == "s3cret"
        again.stop()
    finally:
        for vault in vaults:
            vault.stop()
        for storage in storages:
            await storage.close()


async def test_workers_started_together_on_a_new_database_share_one_vault(
        homeserver, postgres_uri, tmp_path):
    """Both make their vault at the same moment: one makes the master key, the other waits
    and uses it, so both are ready and open what the other sealed."""
    workers = Workers(homeserver, postgres_uri, tmp_path, None)
    try:
        await workers.start()  # at once, on a database nobody started before
        db = Database.create(postgres_uri)
        await db.start()
        try:
            assert await db.fetchval("SELECT COUNT(*) FROM vault_master_key") == 1
            # The key both sealed their system secrets with opens them (the audit MAC key
            # both sign the audit log with; each worker opened it at start).
            vault = Vault(FileKeyProvider(str(tmp_path / "master.key")), VaultKeyStore(db),
                          VaultSecretStore(db))
            await vault.start()
            try:
                assert len(await audit_mac_key(vault)) == 32
            finally:
                vault.stop()
        finally:
            await db.stop()
        # Each worker still answers with that vault: the balancer takes turns.
        for name in workers.processes:
            assert workers.processes[name].process.poll() is None, name
    finally:
        await workers.stop()


async def test_a_link_answered_on_other_workers_completes(
        homeserver, postgres_uri, tmp_path, new_user, prosody, xmpp_peer):
    """The bot asks on one worker and the answer reaches another: `link`, the password and
    `yes` each go to a different worker than the one before, and the link completes."""
    workers = Workers(homeserver, postgres_uri, tmp_path, None, extra={"networks": {"xmpp": {
        "enabled": True, "ca_file": str(prosody.ca), "nameserver": prosody.nameserver}}})
    try:
        await workers.start()
        alice = await new_user("alice")
        alice_xmpp, bob = await xmpp_peer("alice"), await xmpp_peer("bob")
        await alice_xmpp.stop()  # only its credentials are needed
        muc = f"team{bob.nick}@{MUC}"
        await bob.join(muc)
        bot = homeserver.bot_mxid
        room = await alice.open_management_room(bot)
        workers.pin("w1")
        await alice.send_text(room, f"link xmpp {alice_xmpp.jid} --profile Jobb")
        await alice.wait_for_notice(room, bot, "Send it as your next message")
        workers.pin("w2")
        password = await alice.send_text(room, alice_xmpp.password)
        await alice.wait_for_notice(room, bot, "Reply yes to link")
        redacted = await alice.client.get_event(room, password)
        assert not redacted.content.serialize().get("body")  # the password left the room
        workers.pin("w1")
        await alice.send_text(room, "yes")
        await alice.wait_for_notice(room, bot, f"Linked xmpp:{alice_xmpp.jid}")
        db = Database.create(postgres_uri)
        await db.start()
        try:  # the answer was never kept, and the question is spent
            assert await db.fetchval(
                "SELECT COUNT(*) FROM one_time_secret WHERE payload LIKE '%' || $1 || '%'",
                alice_xmpp.password) == 0
        finally:
            await db.stop()
        # A "yes" again is a message like any other: no question is waiting any more.
        await alice.send_text(room, "yes")
        await alice.wait_for_notice(room, bot, "Unknown command")
        # Mapped on the worker without alice's session (handed to the one serving XMPP),
        # then bridged both ways with the transactions going round the workers again.
        serving = (await workers.owners("network:"))["xmpp"]
        workers.pin(next(w for w in workers.processes if w != serving))
        await alice.send_text(room, f"map xmpp {muc} --profile Jobb")
        await alice.wait_for_notice(room, bot, f"Mapped xmpp {muc} into Jobb")
        portal = await alice.wait_for_invite()
        workers.pin(None)
        bob.send(muc, "hello alice")
        await alice.wait_for_event(portal, body_is("hello alice"), "bob's message")
        await alice.send_text(portal, "hello bob")
        await bob.wait_for(lambda m: m["body"] == "hello bob", "alice's message")
    finally:
        await workers.stop()
