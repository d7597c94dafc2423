"""Several bridge workers and an interrupted history import: only the worker serving the
network (the one with its personas' sessions) resumes it. The history arrives once and in
order, the import is recorded as finished, and the worker without the sessions neither tries
to read it nor reports it unreadable. Real Synapse, real Prosody (its MUC archive), and
PostgreSQL (several workers need it)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import attrs

from bridge.core.backfill import CATCH_UP
from bridge.db import open_database
from bridge.db.backfill import DONE, RUNNING

from .support.matrix import DEADLINE
from .support.prosody import MUC
from .support.slack_history import bodies, timeline, until_bodies
from .test_backfill_xmpp import say
from .test_worker_calls import xmpp_on
from .test_workers import Workers, postgres_uri
from .test_xmpp import link_xmpp

__all__ = ["postgres_uri"]  # the fixture, used here

HISTORY, AWAY = 3, 8


def _settings(prosody) -> dict:
    settings = xmpp_on(prosody)
    settings["networks"]["xmpp"]["backfill"] = {"initial_messages": HISTORY}
    # Paced, so the import is still under way when both workers have started.
    return {**settings, "backfill": {"rate": 2, "burst": 1}}


async def logged_since(path: Path, offset: int, text: str) -> str:
    """A worker's log from `offset` on, once `text` is in it (what an admin reads)."""
    async with asyncio.timeout(DEADLINE):
        for _ in range(1_000_000):  # a file has no event to wait on
            found = path.read_text(errors="replace")[offset:]
            if text in found:
                return found
            await asyncio.sleep(0.2)
    raise AssertionError(f"{text!r} never appeared in {path}")


async def test_an_interrupted_import_resumes_once_on_the_worker_serving_the_network(
        homeserver, postgres_uri, tmp_path, new_user, prosody, xmpp_peer):
    workers = Workers(homeserver, postgres_uri, tmp_path, None, extra=_settings(prosody))
    try:
        # One worker: alice maps a room with a past; its newest messages come in.
        await workers.start("w1")
        alice = await new_user("alice")
        alice_xmpp, bob = await xmpp_peer("alice"), await xmpp_peer("bob")
        await alice_xmpp.stop()  # only its credentials are needed
        muc = f"resume{bob.nick}@{MUC}"
        await bob.join(muc)
        for i in range(HISTORY):
            await say(bob, muc, f"h{i}")
        room = await link_xmpp(alice, alice_xmpp, homeserver)
        await alice.send_text(room, f"map xmpp {muc} --profile Jobb")
        portal = await alice.wait_for_invite()
        await until_bodies(alice, portal, f"h{HISTORY - 1}")

        # The bridge goes down in the middle of the room's catch-up (as a kill -9 leaves it:
        # the import recorded as running, from where it had got to), and the room goes on.
        workers.processes["w1"].stop()
        storage = await open_database(postgres_uri)
        try:
            known = await storage.backfills.get("xmpp", muc)
            assert known is not None and known.cursor_ts is not None, known
            await storage.backfills.put(attrs.evolve(
                known, status=RUNNING, kind=CATCH_UP, remaining=50, sent=0))
        finally:
            await storage.close()
        for i in range(AWAY):
            await say(bob, muc, f"away {i}")

        # Both workers start; one of them serves XMPP and brings in what was missed.
        offsets = {name: p.log.stat().st_size if p.log.exists() else 0
                   for name, p in workers.processes.items()}
        await workers.start()
        await until_bodies(alice, portal, f"away {AWAY - 1}")
        bob.send(muc, "live again")
        events = await until_bodies(alice, portal, "live again")
        assert bodies(events) == [*(f"h{i}" for i in range(HISTORY)),
                                  *(f"away {i}" for i in range(AWAY)), "live again"]
        assert len(await timeline(alice, portal)) == len(events)

        serving = (await workers.owners("network:"))["xmpp"]
        other = next(name for name in workers.processes if name != serving)
        # The other worker's start-up is over (its rules are left to the serving worker,
        # and the interrupted imports come right after them): it did not read the history.
        started = await logged_since(workers.processes[other].log, offsets[other],
                                     "Mapped rooms rejoined")
        assert "rules on xmpp are left to the worker serving that network" in started
        assert "not readable" not in started, started
        assert "Resuming the backfill" not in started, started
        # The import is finished: nothing is left to repeat at the next start.
        storage = await open_database(postgres_uri)
        try:
            state = await storage.backfills.get("xmpp", muc)
            assert state is not None and state.status == DONE, state
            assert await storage.backfills.running() == []
        finally:
            await storage.close()
    finally:
        await workers.stop()
