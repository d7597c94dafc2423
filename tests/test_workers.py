"""Several bridge workers on one PostgreSQL: any of them takes the homeserver's transactions,
each portal's outbound queue and each persona's session is served by one of them at a time,
and what a killed worker held is taken over by the others, losing and duplicating nothing.
SQLite serves one bridge process; a second one on the same database is refused."""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
import re
import secrets
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest
from mautrix.types import EventType, MessageType
from mautrix.util.async_db import Database
from slixmpp import JID

from bridge.config import ConfigError
from bridge.configure import load_config
from bridge.core.worker_calls import CallSeal
from bridge.db import open_database
from bridge.db.vault_key import VaultKeyStore
from bridge.db.vault_secret import VaultSecretStore
from bridge.security.system_keys import audit_mac_key
from bridge.security.vault import Vault
from bridge.security.vault.file_provider import FileKeyProvider
from tests.fakes.telegram import TelegramThread

from .support.api import PREFIX, Api
from .support.matrix import DEADLINE
from .support.telegram import qr_token, telegram_settings
from .support.wirenet import WireServer
from .support.workers import LoadBalancer, free_port
from .test_crash_recovery import ROOT, BridgeProcess, all_messages, open_portal
from .test_xmpp import MUC, body_is, link_xmpp, mapped_muc

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


def xmpp_on(prosody) -> dict:
    return {"networks": {"xmpp": {"enabled": True, "ca_file": str(prosody.ca),
                                  "nameserver": prosody.nameserver}}}


async def logged(path: Path, text: str) -> str:
    """A worker's log once `text` is in it (what an admin reads)."""
    async with asyncio.timeout(DEADLINE):
        for _ in range(1_000_000):  # a file has no event to wait on
            if text in (found := path.read_text(errors="replace")):
                return found
            await asyncio.sleep(0.2)
    raise AssertionError(f"{text!r} never appeared in {path}")


SECRET = secrets.token_urlsafe(32)


async def test_map_said_to_a_worker_without_the_session_maps_there(
        homeserver, postgres_uri, tmp_path, new_user, prosody, xmpp_peer):
    """A person cannot choose the worker: `map` through the bot and a rule added through the
    API reach the worker that has no XMPP session, and the room is mapped all the same (joined
    by the worker serving XMPP). That worker's start-up does not call XMPP's rules "not
    active" either: they are not its to judge."""
    workers = Workers(homeserver, postgres_uri, tmp_path, None, extra={
        **xmpp_on(prosody), "provisioning": {"shared_secret": SECRET}})
    api = Api(f"http://127.0.0.1:{workers.ports[1]}")  # the second worker's own address
    try:
        await workers.start("w1")
        alice = await new_user("alice")
        alice_xmpp, bob = await xmpp_peer("alice"), await xmpp_peer("bob")
        await alice_xmpp.stop()  # only its credentials are needed
        bot = homeserver.bot_mxid
        first, second, third = (f"{name}{bob.nick}@{MUC}" for name in ("one", "two", "three"))
        for muc in (first, second, third):
            await bob.join(muc)
        room = await link_xmpp(alice, alice_xmpp, homeserver)
        await alice.send_text(room, f"map xmpp {first} --profile Jobb")
        await alice.wait_for_notice(room, bot, f"Mapped xmpp {first} into Jobb")
        await alice.wait_for_invite()
        await workers.start("w2")  # w1 serves XMPP: alice's session is open there
        assert (await workers.owners("network:"))["xmpp"] == "w1"

        workers.pin("w2")
        await alice.send_text(room, f"map xmpp {second} --profile Jobb")
        mapped = await alice.wait_for_notice(room, bot, second)
        assert f"Mapped xmpp {second} into Jobb" in mapped, mapped
        # Its start-up left XMPP's rules to w1, without a word of them being "not active".
        started = await logged(workers.processes["w2"].log, "Mapped rooms rejoined")
        assert not re.search(r"Rule \S+ not active", started), started
        assert "rules on xmpp are left to the worker serving that network" in started
        portal = await alice.wait_for_invite()
        bob.send(second, "hello over two")
        await alice.wait_for_event(portal, body_is("hello over two"), "bob's message")
        await alice.send_text(portal, "hi bob")
        await bob.wait_for(lambda m: m["body"] == "hi bob", "alice's message")

        # The API's rules, on the worker without the session, likewise.
        status, body = await api.call("POST", f"{PREFIX}/rules", token=SECRET,
                                      query={"user_id": alice.mxid},
                                      body={"network": "xmpp", "remote": third})
        assert status == 201, body
        assert body["remote"] == third
        portal = await alice.wait_for_invite()
        bob.send(third, "hello over three")
        await alice.wait_for_event(portal, body_is("hello over three"), "bob's message")
        # The same checks as on the serving worker: a room mapped already is refused.
        status, body = await api.call("POST", f"{PREFIX}/rules", token=SECRET,
                                      query={"user_id": alice.mxid},
                                      body={"network": "xmpp", "remote": third})
        assert status == 400 and "already mapped" in body["error"], body
        await alice.send_text(room, "rules")
        listed = await alice.wait_for_notice(room, bot, third)
        assert all(muc in listed for muc in (first, second, third)), listed
    finally:
        await api.http.close()
        await workers.stop()


@pytest.fixture(scope="module")
def telegram():
    thread = TelegramThread()
    thread.start()
    yield thread
    thread.stop()


async def test_a_telegram_login_finishes_whichever_worker_gets_each_step(
        homeserver, postgres_uri, tmp_path, new_user, telegram):
    """Telegram's half-done login (a connected client with its own new key) lives on the
    worker that began it; the code and the cloud password reach the other worker and the
    login still completes, by phone and by QR code. Neither is ever in the database."""
    fake = telegram.fake
    workers = Workers(homeserver, postgres_uri, tmp_path, None, extra={"networks": {
        "telegram": telegram_settings(telegram, tmp_path / "telegram.pub")}})
    try:
        await workers.start("w1")
        await workers.start("w2")
        person = fake.add_person("Alice", password="tr0ub4dor")
        alice = await new_user("alice")
        bot = homeserver.bot_mxid
        room = await alice.open_management_room(bot)
        workers.pin("w1")
        await alice.send_text(room, f"link telegram +{person.phone}")
        await alice.wait_for_notice(room, bot, "Send the code")
        workers.pin("w2")  # every step from now on reaches the other worker
        await alice.send_text(room, "11111")
        await alice.wait_for_notice(room, bot, "not the one Telegram sent")
        code = fake.code_for(person)
        await alice.send_text(room, code)
        await alice.wait_for_notice(room, bot, "send its cloud password")
        await alice.send_text(room, "tr0ub4dor")
        await alice.wait_for_notice(room, bot, "Reply yes to link")
        workers.pin(None)
        await alice.send_text(room, "yes")
        await alice.wait_for_notice(room, bot, f"Linked telegram:{person.id}")
        # The code was single-use: said again, it is a message like any other.
        await alice.send_text(room, code)
        await alice.wait_for_notice(room, bot, "Unknown command")

        # By QR code: shown by the second worker, "done" said to the first.
        other = fake.add_person("Bob")
        bob = await new_user("bob")
        bob_room = await bob.open_management_room(bot)
        workers.pin("w2")
        await bob.send_text(bob_room, "link telegram")
        prompt = await bob.wait_for_notice(bob_room, bot, "Scan this QR code")
        image = await bob.wait_for_event(bob_room, lambda e: (
            e.type == EventType.ROOM_MESSAGE and e.sender == bot
            and getattr(e.content, "msgtype", None) == MessageType.IMAGE), "the QR image")
        await telegram.run(fake.accept_qr(qr_token(prompt), other))
        workers.pin("w1")
        await bob.send_text(bob_room, "done")
        await bob.wait_for_notice(bob_room, bot, "Reply yes to link")
        # The scanned code's image is gone from the room, though another worker showed it.
        assert not (await bob.client.get_event(bob_room, image.event_id)
                    ).content.serialize().get("url")
        await bob.send_text(bob_room, "yes")
        await bob.wait_for_notice(bob_room, bot, f"Linked telegram:{other.id}")

        db = Database.create(postgres_uri)
        await db.start()
        try:
            for table in ("one_time_secret", "audit_log", "persona"):
                rows = await db.fetch(f"SELECT * FROM {table}")
                for secret in (code, "tr0ub4dor"):
                    assert all(secret not in str(value) for row in rows
                               for value in tuple(row)), (table, secret)
        finally:
            await db.stop()
    finally:
        await workers.stop()


async def test_a_message_the_muc_refuses_is_reported_not_recorded_as_sent(
        start_bridge, homeserver, new_user, prosody, xmpp_peer):
    """The room answers alice's message with an error (she has no voice there): she is told
    it was not delivered, at once, and it is not counted as sent. Once she may speak again,
    "retry" sends it, once."""
    await start_bridge(extra=xmpp_on(prosody))
    alice = await new_user("alice")
    alice_xmpp, bob = await xmpp_peer("alice"), await xmpp_peer("bob")
    await alice_xmpp.stop()
    bot = homeserver.bot_mxid
    muc = f"team{bob.nick}@{MUC}"
    await bob.join(muc)
    room = await link_xmpp(alice, alice_xmpp, homeserver)
    await alice.send_text(room, f"map xmpp {muc} --profile Jobb")
    await alice.wait_for_notice(room, bot, f"Mapped xmpp {muc} into Jobb")
    portal = await alice.wait_for_invite()
    await alice.send_text(portal, "before")
    await bob.wait_for(lambda m: m["body"] == "before", "alice's first message")
    muc_admin = bob.client.plugin["xep_0045"]
    await muc_admin.set_role(JID(muc), alice_xmpp.nick, "visitor")  # bob, the owner, mutes her
    await alice.send_text(portal, "while muted")
    notice = await alice.wait_for_notice(portal, bot, "Not delivered")
    assert "could not be sent to xmpp" in notice, notice
    told = await alice.wait_for_notice(room, bot, "was not delivered")
    assert "refused it (forbidden" in told, told

    await muc_admin.set_role(JID(muc), alice_xmpp.nick, "participant")
    await alice.send_text(room, "retry")
    await alice.wait_for_notice(room, bot, "Sending again what was not delivered")
    await bob.wait_for(lambda m: m["body"] == "while muted", "the message sent again")
    await alice.send_text(portal, "after")
    await bob.wait_for(lambda m: m["body"] == "after", "alice's last message")
    said = [m["body"] for m in bob.messages if m["type"] == "groupchat"]
    assert [b for b in said if b in ("before", "while muted", "after")] == [
        "before", "while muted", "after"], said
    # Nothing of it came back into the room (the error, a late reflection).
    bodies = [e.content.body for e in await alice.room_events(portal)
              if e.type == EventType.ROOM_MESSAGE]
    assert bodies.count("while muted") == 1, bodies


async def test_a_worker_call_opens_only_where_and_as_it_was_sealed():
    """What a worker hands another (a Telegram code, say) is unreadable in the NOTIFY and
    opens only for the worker it was sealed for, in its direction, under its call id."""
    key = secrets.token_bytes(32)

    async def vault_key() -> bytes:
        return key

    seal = CallSeal(vault_key)
    sealed = await seal.seal("c1", "call", "w1", "w2", {"answers": {"code": "12345"}})
    assert "12345" not in sealed and "12345" not in base64.b64decode(sealed).decode(
        errors="replace")
    assert await seal.open("c1", "call", "w1", "w2", sealed) == {"answers": {"code": "12345"}}
    for call_id, direction, sender, receiver in (("c2", "call", "w1", "w2"),
                                                 ("c1", "answer", "w1", "w2"),
                                                 ("c1", "call", "w3", "w2"),
                                                 ("c1", "call", "w1", "w3")):
        with pytest.raises(ValueError):
            await seal.open(call_id, direction, sender, receiver, sealed)

    async def other_key() -> bytes:
        return secrets.token_bytes(32)

    with pytest.raises(ValueError):  # sealed by something without the vault's key
        await CallSeal(other_key).open("c1", "call", "w1", "w2", sealed)
