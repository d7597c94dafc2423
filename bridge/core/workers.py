"""Several bridge processes ("workers") on one PostgreSQL database.

Any worker accepts the homeserver's transactions (handled once: bridge/db/transaction.py,
bridge/db/outbound.py). What must happen in one place at a time is leased to one worker
(bridge/db/lease.py). A network whose people sign in (their personas' sessions send and
receive) is served by one worker as a whole (`network:`): that worker opens every persona's
session on it (`persona:` records which) and sends every portal's queue on it, since a
message is sent through its sender's session. A network the bot relays (no personas) has its
portals spread out: each portal's outbound queue (`room:`) is claimed by the first worker that
has something to send there. A lease lives as long as its worker's heartbeat; a worker that dies
(kill -9, a lost machine) stops beating, and after `bridge.workers.lease_seconds` the others
claim its rooms and sessions. A worker whose own heartbeat could not be renewed in time stops
sending on its own before anyone else may start ("self-fencing").

Workers tell each other over PostgreSQL's LISTEN/NOTIFY (bridge/db/lease_channel.py): "this
room has new events" (to the room's owner), "this persona changed" (to its session's owner),
"drop this from your cache" (portals, Matrix room state, vault data keys), and "I am
stopping" (take my rooms and sessions now rather than after the lease runs out).

A person cannot choose which worker gets their command, so what needs one worker's sessions
or memory is handed to that worker over the same channel and its answer awaited (`call`,
sealed by core/worker_calls.py; core/worker_wiring.py hooks a worker into the bridge):
`map` (and the API's and pages' rules) said to any worker joins the room on the worker serving
the network, and a login step reaches the worker holding the half-done login (a Telegram
client waiting for its code). Each call and answer is sealed (AES-GCM, under a key kept in
the vault, bound to the call's id, direction and the two workers), so a code or password in
it is never readable in a NOTIFY, and a worker acts only on calls sealed by another worker.
The callee says at once that it took the call; the caller then waits while the callee lives
(its heartbeat), and a callee that stops or never takes it is reported to the person, who may
try again (nothing is retried behind their back: the work may have been done).

Without `bridge.workers.enabled` there is one worker, which owns everything; a second process
on the same database is refused at start-up (on SQLite always: it serves one process).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import attrs
from mautrix.util.async_db import Scheme

from ..config import get_path
from ..db import Storage
from ..db.lease import NETWORK, PERSONA, ROOM, LeaseStore
from ..db.lease_channel import MAX_PAYLOAD, WorkerLink
from .worker_calls import CallFailed, CallHandler, CallSeal, PendingCall

log = logging.getLogger("relayforge.workers")

SINGLE, SHARED = "single", "shared"
# How long before its lease runs out a worker stops sending, in case its clock or its
# heartbeat lags: by the time others may take over, it has stopped.
FENCE_MARGIN = 0.25  # of the lease
MAX_CALL_PAYLOAD = MAX_PAYLOAD


class WorkerConflict(OSError):
    """Another live process is this worker, or runs alone on this database."""


@attrs.frozen
class WorkerSettings:
    enabled: bool = False
    worker_id: str = "main"
    lease_seconds: float = 15.0

    @classmethod
    def from_config(cls, get: Callable[[str], Any]) -> WorkerSettings:
        enabled = bool(get("bridge.workers.enabled"))
        # One process keeps one name across restarts, so a restart gets its leases back at
        # once; several default to their host's name (set bridge.workers.id for several on
        # one host).
        worker_id = get("bridge.workers.id") or (socket.gethostname() if enabled else "main")
        return cls(enabled, worker_id, float(get("bridge.workers.lease_seconds")))


def config_problems(effective: Mapping[str, Any], _networks: Mapping[str, Any]) -> list[str]:
    """The config check (bridge/configure.py): several workers need PostgreSQL."""
    if get_path(effective, "bridge.workers.enabled", False) is True and str(
            get_path(effective, "database.uri", "")).startswith("sqlite:"):
        return ["bridge.workers.enabled: several workers need PostgreSQL; SQLite serves one "
                "bridge process (set database.uri to postgres://..., or turn workers off)"]
    return []


class SqliteLock:
    """The one process on a SQLite database: an exclusive lock on a file beside it, which the
    operating system releases however the process ends (so a crash never blocks a restart)."""

    def __init__(self, database_path: str) -> None:
        self.path = f"{database_path}.worker-lock"
        self._fd: int | None = None

    def take(self) -> None:
        try:
            import fcntl
        except ImportError:  # not POSIX: nothing to lock with
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise WorkerConflict(
                f"another RelayForge process (pid {holder}) is using this SQLite database; "
                "SQLite serves one bridge process. Stop the other one, or move to PostgreSQL "
                "and set bridge.workers.enabled to run several workers") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def sqlite_path(uri: str) -> str | None:
    if not uri.startswith("sqlite:"):
        return None
    path = uri.removeprefix("sqlite:").split("?", 1)[0]
    return None if path in ("", ":memory:") else path.removeprefix("//")


class Workers:
    """This process's part among the workers: what it owns, and what it tells the others."""

    def __init__(self, storage: Storage, settings: WorkerSettings) -> None:
        self.storage = storage
        self.settings = settings
        self.worker_id = settings.worker_id
        self.shared = settings.enabled
        self.leases = LeaseStore(storage.db)
        self.link = WorkerLink(storage.db) if storage.db.scheme != Scheme.SQLITE else None
        self._lease_ms = int(settings.lease_seconds * 1000)
        self._alive_until = 0.0  # monotonic time until which our leases are surely ours
        self._rooms: set[str] = set()
        self._personas: set[str] = set()
        self._networks: set[str] = set()
        # Networks of personas with a session being opened (and its rooms joined) here: their
        # sends wait, as a message sent before its room is joined again could be refused.
        self._preparing: Counter[str] = Counter()
        # Networks whose sessions are people's (served whole by one worker); set by the app.
        self.persona_networks: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._errands: set[asyncio.Future[None]] = set()  # announcements on their way
        self._wake = asyncio.Event()  # run the take-over scan now
        # Wired by the app: send a room's queue here; open, follow or close a session here;
        # which personas should have a session; drop an entry from a cache.
        self.send_room: Callable[[str], None] = lambda room: None
        self.open_persona: Callable[[str], Awaitable[None]] | None = None
        self.follow_persona: Callable[[str], Awaitable[None]] | None = None
        self.close_persona: Callable[[str], Awaitable[None]] | None = None
        self.personas_wanted: Callable[[str], Awaitable[list[str]]] | None = None
        self.caches: dict[str, Callable[[str], None]] = {}
        # Calls other workers may make here (`call`), by name; wired by the app.
        self.handlers: dict[str, CallHandler] = {}
        self.seal: CallSeal | None = None
        self._calls: dict[str, PendingCall] = {}

    # ---- start and stop ----------------------------------------------------------------------

    async def start(self) -> None:
        if self.link is None:
            return  # SQLite: one process, held by SqliteLock
        if not await self.link.open(self.worker_id, self._received):
            raise WorkerConflict(
                f"another process is running as worker {self.worker_id!r} on this database: "
                "give each worker its own bridge.workers.id"
                if self.shared else
                "another RelayForge process is running on this database. Stop it, or set "
                "bridge.workers.enabled (and a bridge.workers.id for each) to run several")
        others = [w for w in await self.leases.alive_workers() if w.worker_id != self.worker_id]
        if others and (not self.shared or any(
                w.mode == SINGLE for w in others)):
            # A live heartbeat under another name: a second process on this database.
            # (A crashed one's heartbeat runs out after bridge.workers.lease_seconds.)
            await self.link.close()
            alone = next((w for w in others if w.mode == SINGLE), None)
            raise WorkerConflict(
                f"worker {others[0].worker_id!r} is running alone on this database; turn on "
                "bridge.workers.enabled for every worker, or stop it" if alone else
                f"workers ({', '.join(w.worker_id for w in others)}) are running on this "
                "database; set bridge.workers.enabled to run with them")
        await self._beat()
        self.link.on_lost = self._wake.set
        self._tasks.append(asyncio.create_task(self._heartbeats(), name="worker heartbeat"))
        if self.shared:
            log.info("Worker %s: sharing the database with %s", self.worker_id,
                     ", ".join(w.worker_id for w in others) or "no other worker yet")

    async def stop(self) -> None:
        """An orderly stop: the others take this worker's rooms and sessions at once."""
        if self.link is None:
            return
        tasks = [*self._tasks, *self._errands]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        self._alive_until = 0.0
        try:
            await self.leases.retire(self.worker_id)
            await self._publish("retired", self.worker_id)
        except Exception:
            log.warning("Could not hand over this worker's leases; they run out after %ss",
                        self.settings.lease_seconds, exc_info=True)
        if self.link is not None:
            await self.link.close()

    # ---- heartbeat and take-over -------------------------------------------------------------

    async def _beat(self) -> None:
        started = time.monotonic()
        had_lapsed = not await self.leases.heartbeat(self.worker_id, self._lease_ms,
                                                     SHARED if self.shared else SINGLE)
        if had_lapsed and (self._rooms or self._personas):
            # Others may have taken some of them meanwhile: ask the database again.
            log.warning("Worker %s missed its heartbeat: checking which rooms and sessions "
                        "are still its own", self.worker_id)
            await self._recheck()
        self._alive_until = started + self.settings.lease_seconds * (1 - FENCE_MARGIN)

    async def _recheck(self) -> None:
        for room in list(self._rooms):
            if await self.leases.owner(ROOM + room) != self.worker_id:
                self._rooms.discard(room)
        for network in list(self._networks):
            if await self.leases.owner(NETWORK + network) != self.worker_id:
                self._networks.discard(network)
        for persona_id in list(self._personas):
            if await self.leases.owner(PERSONA + persona_id) != self.worker_id:
                self._personas.discard(persona_id)
                if self.close_persona is not None:
                    await self.close_persona(persona_id)

    async def _heartbeats(self) -> None:
        interval = self.settings.lease_seconds / 4
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval)
            self._wake.clear()
            try:
                if self.link is not None and not self.link.connected:
                    await self.link.reopen()
                await self._beat()
                if self.shared:
                    await self.take_over()
                    await self.leases.prune_dead(self._lease_ms * 100)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("Worker %s: heartbeat or take-over failed; trying again",
                            self.worker_id, exc_info=True)

    async def take_over(self) -> None:
        """Claim what no live worker serves: networks (their sessions and portals), and
        rooms with events waiting."""
        for network in sorted(self.persona_networks - self._networks):
            if await self.leases.owner(NETWORK + network) is None and await self._claim_network(
                    network):
                log.info("Worker %s took over the %s network", self.worker_id, network)
                if self.personas_wanted is not None and self.open_persona is not None:
                    async with self.preparing(network):  # sent once its rooms are joined
                        for persona_id in await self.personas_wanted(network):
                            await self.open_persona(persona_id)
        for room, network in await self.leases.unowned_rooms_waiting():
            if network in self.persona_networks:
                if network in self._networks:
                    self.send_room(room)  # its sender's session is here now
                continue
            if await self.leases.claim(ROOM + room, self.worker_id):
                log.info("Worker %s took over sending in %s", self.worker_id, room)
                self._rooms.add(room)
                self.send_room(room)

    async def _claim_network(self, network: str) -> bool:
        if network in self._networks:
            return True
        if await self.leases.claim(NETWORK + network, self.worker_id):
            self._networks.add(network)
            return True
        return False

    def _fenced(self) -> bool:
        return time.monotonic() > self._alive_until

    # ---- what the rest of the bridge asks ----------------------------------------------------

    async def may_send(self, room: str, network: str) -> bool:
        """May this worker send the room's outbound queue now? Claims the room (or, for a
        network of personas, the network) if nobody serves it. Cheap when it is ours: no
        database round trip."""
        if not self.shared:
            return True
        if self._fenced():
            return False
        if network in self.persona_networks:
            return not self._preparing[network] and await self._claim_network(network)
        if room in self._rooms:
            return True
        if await self.leases.claim(ROOM + room, self.worker_id):
            self._rooms.add(room)
            return True
        return False

    @asynccontextmanager
    async def preparing(self, network: str) -> AsyncIterator[None]:
        """While a session of the network is opened and its rooms joined again: the
        network's rooms wait, and are sent once it is done."""
        self._preparing[network] += 1
        try:
            yield
        finally:
            self._preparing[network] -= 1
            if not self._preparing[network]:
                del self._preparing[network]
                for room, waiting in await self.leases.unowned_rooms_waiting():
                    if waiting == network:
                        self.send_room(room)

    async def sent_elsewhere(self, room: str, network: str) -> None:
        """Events were queued for a room another worker sends: wake that worker."""
        await self._publish("room", f"{room}\n{network}")

    async def may_open(self, persona_id: str, network: str) -> bool:
        """May this worker open the persona's session? Only the worker serving its network
        does (claimed if nobody serves it)."""
        if not self.shared:
            return True
        if self._fenced():
            return False
        if not await self._claim_network(network):
            # Linked or resumed here while another worker serves the network: that one
            # opens it (it may not know the persona yet).
            await self._publish("open", persona_id)
            return False
        if persona_id in self._personas:
            return True
        if await self.leases.claim(PERSONA + persona_id, self.worker_id):
            log.info("Worker %s has the session of persona %s", self.worker_id, persona_id)
            self._personas.add(persona_id)
            return True
        log.info("The session of persona %s is open on another worker", persona_id)
        return False

    async def closed(self, persona_id: str) -> None:
        """The persona's session was closed here (unlinked, paused, relinked): free it, or
        have the worker that has it open follow (close it, or reopen it with the new
        credentials)."""
        if not self.shared:
            return
        if persona_id in self._personas:
            self._personas.discard(persona_id)
            await self.leases.release(PERSONA + persona_id, self.worker_id)
        else:
            await self._publish("persona", persona_id)

    async def persona_changed(self, persona_id: str) -> None:
        """The persona's status changed here: its session's owner follows it."""
        if self.shared and persona_id not in self._personas:
            await self._publish("persona", persona_id)

    def forget(self, cache: str, key: str) -> None:
        """An entry of `cache` changed here: the other workers drop their copy."""
        if self.shared:
            self._errand(self._publish(f"cache:{cache}", key))

    def _errand(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._errands.add(task)
        task.add_done_callback(self._errands.discard)

    # ---- calls: work only another worker can do ---------------------------------------------

    def serves(self, network: str) -> bool:
        """Does this worker serve the network's sessions (so it judges its rules)?"""
        return not self.shared or network in self._networks

    async def where_served(self, network: str) -> str | None:
        """The other live worker serving the network; None when it is this one, or nobody
        serves it yet (the work is then done here)."""
        if self.serves(network):
            return None
        owner = await self.leases.owner(NETWORK + network)
        return None if owner in (None, self.worker_id) else owner

    async def run_where_served(self, network: str, what: str, args: dict[str, Any], *,
                               limit: float) -> dict[str, Any] | None:
        """Run `what` on the worker serving the network and return its answer; None when
        this worker serves it (or nobody does): the caller does it here. A network that moved
        on meanwhile is followed to its new worker."""
        for _ in range(3):
            worker = await self.where_served(network)
            if worker is None:
                return None
            answer = await self.call(worker, what, {**args, "network": network}, limit=limit,
                                     network=network)
            if not answer.get("moved"):
                return answer
        raise CallFailed(f"kept handing the {network} network on")

    async def alive(self, worker: str) -> bool:
        return any(w.worker_id == worker for w in await self.leases.alive_workers())

    async def call(self, worker: str, what: str, args: dict[str, Any], *, limit: float,
                   network: str | None = None) -> dict[str, Any]:
        """Have `worker` run its handler `what` with `args`, and wait for the answer: as
        long as that worker lives, at most `limit` seconds. Sent once: a call it did not
        take, or did not finish, raises CallFailed (the work may have been done)."""
        if self.link is None or self.seal is None or not self.shared:
            raise CallFailed("is not reachable from here")
        call_id = secrets.token_urlsafe(12)
        pending = PendingCall(worker)
        self._calls[call_id] = pending
        try:
            body = await self.seal.seal(call_id, "call", self.worker_id, worker,
                                        {"what": what, "args": args, "network": network})
            try:
                await self.link.publish(json.dumps({
                    "from": self.worker_id, "kind": "call",
                    "key": json.dumps({"id": call_id, "to": worker, "body": body})}))
            except ValueError as e:  # too long for a NOTIFY
                raise CallFailed("could not be asked: the request is too long") from e
            async with asyncio.timeout(limit):
                try:  # a live worker takes it at once; one that does not may be stopping
                    await asyncio.wait_for(pending.taken.wait(),
                                           max(2 * self.settings.lease_seconds, 5))
                except TimeoutError:
                    raise CallFailed("did not answer") from None
                while True:
                    try:
                        return await asyncio.wait_for(asyncio.shield(pending.answer),
                                                      self.settings.lease_seconds)
                    except TimeoutError:
                        if not await self.alive(worker):
                            raise CallFailed("stopped before it answered") from None
        except TimeoutError:
            raise CallFailed("did not finish in time") from None
        finally:
            self._calls.pop(call_id, None)

    async def _called(self, sender: str, call_id: str, sealed: str) -> None:
        """Another worker's call: taken (said at once, once its seal is checked: a forged
        call gets no answer at all), run, answered."""
        assert self.seal is not None
        try:
            request = await self.seal.open(call_id, "call", sender, self.worker_id, sealed)
        except ValueError:
            log.warning("Ignoring a call from worker %s that is not sealed for this one",
                        sender)
            return
        await self._publish("took", json.dumps({"id": call_id, "to": sender}))
        what, network = request.get("what"), request.get("network")
        handler = self.handlers.get(str(what))
        answer: dict[str, Any]
        if handler is None:
            answer = {"failed": f"this worker does not know {what!r}"}
        elif network is not None and not self.serves(network):
            answer = {"moved": True}  # handed on since: the caller asks its new worker
        else:
            try:
                answer = await handler(request.get("args") or {})
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("A call from worker %s (%s) failed here", sender, what)
                answer = {"failed": "failed with an internal error (see its log)"}
        payload = await self._answer_payload(call_id, sender, answer)
        if len(payload.encode()) > MAX_CALL_PAYLOAD:
            log.warning("The answer to a call from worker %s (%s) is too long to send",
                        sender, what)
            payload = await self._answer_payload(call_id, sender, {
                "failed": "had an answer too long to pass between workers"})
        try:
            assert self.link is not None
            await self.link.publish(payload)
        except Exception:
            log.warning("Could not answer a call from worker %s", sender, exc_info=True)

    async def _answer_payload(self, call_id: str, caller: str, answer: dict[str, Any]) -> str:
        assert self.seal is not None
        body = await self.seal.seal(call_id, "answer", self.worker_id, caller, answer)
        return json.dumps({"from": self.worker_id, "kind": "answer",
                           "key": json.dumps({"id": call_id, "to": caller, "body": body})})

    async def _answered(self, sender: str, call_id: str, sealed: str) -> None:
        pending = self._calls.get(call_id)
        if pending is None or pending.worker != sender or pending.answer.done():
            return
        assert self.seal is not None
        try:
            answer = await self.seal.open(call_id, "answer", sender, self.worker_id, sealed)
        except ValueError:
            log.warning("Ignoring an answer from worker %s that is not sealed for this one",
                        sender)
            return
        if not pending.answer.done():
            pending.answer.set_result(answer)

    def _call_message(self, sender: str, kind: str, key: str) -> None:
        try:
            message = json.loads(key)
            call_id, receiver = str(message["id"]), message["to"]
        except (ValueError, KeyError, TypeError):
            log.warning("Ignoring a malformed worker call")
            return
        if receiver != self.worker_id:
            return
        if kind == "took":
            pending = self._calls.get(call_id)
            if pending is not None and pending.worker == sender:
                pending.taken.set()
        elif self.seal is not None and isinstance(message.get("body"), str):
            if kind == "call":
                self._errand(self._called(sender, call_id, message["body"]))
            else:
                self._errand(self._answered(sender, call_id, message["body"]))

    # ---- the channel -------------------------------------------------------------------------

    async def _publish(self, kind: str, key: str) -> None:
        if self.link is None or not self.shared:
            return
        try:
            await self.link.publish(json.dumps({"from": self.worker_id, "kind": kind,
                                                "key": key}))
        except Exception:
            log.warning("Could not tell the other workers about %s %s", kind, key,
                        exc_info=True)

    def _received(self, payload: str) -> None:
        try:
            message = json.loads(payload)
            sender, kind, key = message["from"], message["kind"], message["key"]
        except (ValueError, KeyError, TypeError):
            log.warning("Ignoring a malformed worker announcement")
            return
        if sender == self.worker_id:
            return
        if kind == "room":
            room, _, network = key.partition("\n")
            if room in self._rooms or network in self._networks:
                self.send_room(room)
        elif kind == "persona":
            if key in self._personas and self.follow_persona is not None:
                self._errand(self.follow_persona(key))
        elif kind == "open":
            # Only a worker serving a network of personas can open it; opening claims the
            # persona's lease, so of several such workers the one serving its network does.
            if (key not in self._personas and self._networks
                    and self.open_persona is not None):
                self._errand(self.open_persona(key))
        elif kind in ("call", "took", "answer"):
            self._call_message(sender, kind, key)
        elif kind == "retired":
            self._wake.set()  # its rooms and sessions are free now
        elif kind.startswith("cache:"):
            drop = self.caches.get(kind.removeprefix("cache:"))
            if drop is not None:
                drop(key)
