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

Without `bridge.workers.enabled` there is one worker, which owns everything; a second process
on the same database is refused at start-up (on SQLite always: it serves one process).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any, Protocol

import attrs
from mautrix.types import RoomID
from mautrix.util.async_db import Scheme

from ..config import get_path
from ..db import Storage
from ..db.lease import NETWORK, PERSONA, ROOM, LeaseStore
from ..db.lease_channel import WorkerLink

if TYPE_CHECKING:  # the config check imports this module: keep it light
    from ..db.persona import Persona
    from .delivery import Delivery
    from .sessions import PersonaSessions

log = logging.getLogger("relayforge.workers")

SINGLE, SHARED = "single", "shared"
# How long before its lease runs out a worker stops sending, in case its clock or its
# heartbeat lags: by the time others may take over, it has stopped.
FENCE_MARGIN = 0.25  # of the lease


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
        elif kind == "retired":
            self._wake.set()  # its rooms and sessions are free now
        elif kind.startswith("cache:"):
            drop = self.caches.get(kind.removeprefix("cache:"))
            if drop is not None:
                drop(key)


class _Portals(Protocol):
    on_forget: list[Callable[[str, str], None]]
    exclusive: Callable[[str], AbstractAsyncContextManager[None]]

    def drop_cached(self, network: str, remote_id: str) -> None: ...


class _RoomState(Protocol):
    on_write: list[Callable[[RoomID], None]]

    def drop_room(self, room_id: RoomID) -> None: ...


class _Vault(Protocol):
    def forget_cached_key(self, profile: str) -> None: ...


class _Rules(Protocol):
    async def activate_all(self, persona: Persona | None = None) -> None: ...


def wire_workers(workers: Workers, delivery: Delivery, sessions: PersonaSessions,
                 rules: _Rules, portals: _Portals, room_state: _RoomState,
                 vault: _Vault) -> None:
    """Hook this worker into the rest of the bridge, when it shares the database: who sends
    which room, who has which session, and the caches the workers keep in step."""
    if not workers.shared:
        return
    delivery.gate = workers
    sessions.gate = workers

    async def open_here(persona_id: str) -> None:
        """A session taken over (or linked on another worker): open it, and rejoin its
        mapped rooms with it."""
        persona = await sessions.storage.personas.get(persona_id)
        if persona is None:
            return
        async with workers.preparing(persona.platform):
            if await sessions.open(persona, unless_open=True):
                await rules.activate_all(persona)

    async def follow_here(persona_id: str) -> None:
        """The persona changed on another worker: opening a session again starts a fresh
        connection, which has joined nothing yet, so its mapped rooms are joined again."""
        persona = await sessions.storage.personas.get(persona_id)
        if persona is None:
            return
        async with workers.preparing(persona.platform):
            await sessions.follow_id(persona_id)
            if persona_id in sessions.opened:
                await rules.activate_all(persona)

    workers.send_room = delivery.kick
    workers.open_persona = open_here
    workers.follow_persona = follow_here
    workers.close_persona = sessions.close_id
    workers.personas_wanted = sessions.wanted
    workers.persona_networks = {network for network, connector in sessions.connectors.items()
                                if connector.requires_authorization}
    # The portal cache: a portal renamed, claimed or mapped here is read afresh there.
    portals.on_forget.append(
        lambda network, remote_id: workers.forget("portal", json.dumps([network, remote_id])))
    workers.caches["portal"] = lambda key: portals.drop_cached(*json.loads(key))
    # Two workers seeing the first message of one remote room make one portal.
    portals.exclusive = workers.leases.exclusive
    # Matrix room state (members, power levels): each worker sees its own transactions.
    room_state.on_write.append(lambda room: workers.forget("room_state", room))
    workers.caches["room_state"] = lambda room: room_state.drop_room(RoomID(room))
    # Vault data keys: a key rotated or shredded here must not live on there.
    drop_key = vault.forget_cached_key

    def forget_key(profile: str) -> None:
        drop_key(profile)
        workers.forget("vault", profile)

    vault.forget_cached_key = forget_key  # type: ignore[method-assign]
    workers.caches["vault"] = drop_key
