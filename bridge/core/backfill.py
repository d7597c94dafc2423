"""Bringing a remote room's past into its portal: on creation (the newest messages) and
after downtime (everything since the last message seen), through one path for every network.

History is read as the persona whose rule maps the room (`networks/history.py`), sent
through the router like live events (so ghosts, double puppets, replies, threads, edits,
reactions and media look the same) with their original timestamps, paced per network, and
recorded after each page so a crash resumes instead of starting over. While it runs, the
portal's live events wait at its gate and land after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any

import attrs

from ..audit import AuditEvent, AuditLog
from ..db import Storage
from ..db.backfill import DONE, RUNNING, BackfillState
from ..db.persona import Persona, PersonaStatus
from ..db.portal import Portal
from ..networks.base import Connector, RateLimited, RemoteEvent, RemoteMessage, RemoteRoom
from ..networks.history import (
    HistoryCursor,
    HistoryNotReadable,
    HistoryPage,
    HistoryReader,
    NoHistory,
    history_reader,
)
from .backfill_gate import FROM_HISTORY, PortalGate
from .backfill_pace import Pacer
from .inflight import SendsInFlight

log = logging.getLogger("relayforge.backfill")

INITIAL, CATCH_UP = "initial", "catch_up"
# How far before the last bridged message a catch-up starts when the history cursor is
# older: clocks differ a little, and the message map drops what comes twice.
_OVERLAP_MS = 5000
# Personas whose sessions receive (a read-only one still reads; core/sessions.py).
_READING = (PersonaStatus.ACTIVE, PersonaStatus.READ_ONLY)


@attrs.frozen
class BackfillSettings:
    initial_messages: int = 50
    max_age_days: int = 30
    catch_up_limit: int = 1000
    rate: float = 20.0
    burst: int = 10
    notice_threshold: int = 20
    page_size: int = 50
    per_network: Mapping[str, int] = attrs.field(factory=dict)

    @classmethod
    def from_config(cls, get: Callable[[str], Any], networks: Iterable[str]
                    ) -> BackfillSettings:
        per_network = {}
        for network in networks:
            value = get(f"networks.{network}.backfill.initial_messages")
            if value is not None:
                per_network[network] = value
        return cls(initial_messages=get("backfill.initial_messages"),
                   max_age_days=get("backfill.max_age_days"),
                   catch_up_limit=get("backfill.catch_up_limit"),
                   rate=get("backfill.rate"), burst=get("backfill.burst"),
                   notice_threshold=get("backfill.notice_threshold"),
                   per_network=per_network)

    def initial_for(self, network: str) -> int:
        return self.per_network.get(network, self.initial_messages)


Deliver = Callable[[str, RemoteEvent], Awaitable[None]]


@attrs.define
class JoinHold:
    """What `Backfill.joining` holds: the room's gate (`room_held`, until `portal_ready`
    takes it over) or, with no `remote_room`, its network's."""

    network: str
    remote_room: str | None
    room_held: bool = False


Tell = Callable[[Any, str], Awaitable[Any]]


class Backfill:
    def __init__(self, storage: Storage, connectors: Mapping[str, Connector], gate: PortalGate,
                 deliver: Deliver, audit: AuditLog, settings: BackfillSettings,
                 tell: Tell | None = None, in_flight: SendsInFlight | None = None) -> None:
        self.storage = storage
        self.connectors = connectors
        self.gate = gate
        # The router's own handling of a remote event (not the gate's door).
        self.deliver = deliver
        self.audit = audit
        self.settings = settings
        self.tell = tell
        # The router's sends to remote rooms: history may hold what the bridge is sending
        # right now, before its remote id is in the message map.
        self.in_flight = in_flight
        self.pacer = Pacer(settings.rate, settings.burst)
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        # With several workers: does this one serve the network's sessions? Only that one
        # reads its history; another would find no session and leave the run unfinished.
        self.serves: Callable[[str], bool] = lambda network: True

    def reads_history(self, network: str) -> bool:
        connector = self.connectors.get(network)
        return connector is not None and history_reader(connector) is not None

    # ---- when ------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def joining(self, network: str, remote_room: str | None
                      ) -> AsyncIterator[JoinHold]:
        """Around joining a mapped room and making its portal: the network may report the
        room's live events as soon as it is joined, and they must wait behind its history.
        Holds the room's gate (`remote_room`, its network id) or, when that id is not known
        yet (a new rule naming "#general"), the whole network's, until `portal_ready` takes
        over or the block ends."""
        hold = JoinHold(network, remote_room)
        if remote_room is not None:
            hold.room_held = self.gate.hold(network, remote_room)
        else:
            self.gate.hold_network(network)
        try:
            yield hold
        finally:
            if hold.room_held and remote_room is not None:
                await self.gate.release(network, remote_room, self.deliver)
            if remote_room is None:
                await self.gate.release_network(network, self.deliver)

    async def portal_ready(self, network: str, room: RemoteRoom, persona_id: str,
                           hold: JoinHold | None = None) -> None:
        """A mapped room was (re)joined: a new portal gets its newest messages, a known one
        what it missed. Runs in the background; live events wait at the gate meanwhile
        (from `hold` on, when the caller held it while joining)."""
        reader = self._reader(network)
        held = False
        if hold is not None and hold.room_held and hold.remote_room == room.remote_id:
            held, hold.room_held = True, False  # its release is ours now
        if reader is None or (network, room.remote_id) in self._tasks:
            if held:
                await self.gate.release(network, room.remote_id, self.deliver)
            return
        if not held and not self.gate.hold(network, room.remote_id):
            return
        try:
            state = await self._plan(network, room, persona_id)
        except BaseException:
            await self.gate.release(network, room.remote_id, self.deliver)
            raise
        if state is None:
            await self.gate.release(network, room.remote_id, self.deliver)
            return
        self._start(reader, room, state)

    async def history_gap(self, network: str, persona_id: str,
                          remote_room_ids: Iterable[str] | None = None) -> None:
        """A connector may have missed events (it reconnected, its session was invalid):
        the active portals the persona's rules map (or those of them named) catch up,
        pattern rules' included (the portals of the rooms they matched)."""
        persona = await self.storage.personas.get(persona_id)
        if persona is None or persona.status not in _READING:
            return
        wanted = set(remote_room_ids) if remote_room_ids is not None else None
        for remote_id, name in await self._mapped(persona, network):
            if wanted is None or remote_id in wanted:
                await self.portal_ready(network, RemoteRoom(remote_id, name), persona_id)

    async def _mapped(self, persona: Persona, network: str) -> list[tuple[str, str | None]]:
        """(remote id, name) of the portals with a Matrix room that the persona's profile's
        rules map on `network` (shared rooms, or the persona's own direct chats)."""
        found: dict[str, str | None] = {}
        for rule in await self.storage.rules.for_profile_network(persona.profile_id, network):
            if "*" in rule.remote:
                for remote_id, name in await self.storage.backfills.pattern_portals(
                        network, rule.remote, rule.id, persona.id):
                    found.setdefault(remote_id, name)
                continue
            portal = await self.storage.portals.get(network, rule.remote)
            if portal is not None and portal.mxid and portal.receiver in (None, persona.id):
                found.setdefault(portal.remote_id, portal.name)
        return list(found.items())

    async def resume(self) -> None:
        """At start-up: backfills a crash or a stop interrupted carry on where they were,
        those no rule's rejoining resumed already (direct chats, say). Only where the
        persona is active and still has the room: a rule of its profile maps it, or it is
        the persona's own direct chat."""
        for state in await self.storage.backfills.running():
            key = (state.network, state.remote_room)
            reader = self._reader(state.network)
            portal = await self.storage.portals.get(state.network, state.remote_room)
            if reader is None or not self.serves(state.network) or portal is None \
                    or not portal.mxid or key in self._tasks \
                    or not await self._still_mapped(state, portal):
                continue
            if not self.gate.hold(*key):
                continue
            try:
                state = await self._plan(state.network, RemoteRoom(portal.remote_id,
                                                                   portal.name),
                                         state.persona_id)
            except BaseException:
                await self.gate.release(*key, self.deliver)
                raise
            if state is None:
                await self.gate.release(*key, self.deliver)
                continue
            log.info("Resuming the backfill of %s %s (%d sent)", state.network,
                     state.remote_room, state.sent)
            self._start(reader, RemoteRoom(portal.remote_id, portal.name), state)

    async def _still_mapped(self, state: BackfillState, portal: Portal) -> bool:
        persona = await self.storage.personas.get(state.persona_id)
        if persona is None or persona.status not in _READING:
            return False
        if portal.receiver is not None:
            return portal.receiver == persona.id
        return any(remote_id == portal.remote_id
                   for remote_id, _ in await self._mapped(persona, state.network))

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def finished(self, network: str, remote_room: str) -> None:
        """Until the backfill of this portal running now, if any, has finished. `wait`,
        not `await task`: a caller being stopped leaves the backfill to the backfill's own
        stop (it resumes at the next start)."""
        task = self._tasks.get((network, remote_room))
        if task is not None:
            await asyncio.wait({task})

    async def wait(self) -> None:
        """Until every backfill running now has finished (tests, the benchmark)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)

    # ---- what ------------------------------------------------------------------------------

    def _reader(self, network: str) -> HistoryReader | None:
        connector = self.connectors.get(network)
        return history_reader(connector) if connector is not None else None

    async def _plan(self, network: str, room: RemoteRoom, persona_id: str
                    ) -> BackfillState | None:
        """What to bring in: a running backfill resumes; a portal that has had messages
        catches up from the newest one seen; a new one gets its newest messages."""
        known = await self.storage.backfills.get(network, room.remote_id)
        last_bridged = await self.storage.messages.latest_timestamp(network, room.remote_id)
        if known is not None and known.status == RUNNING and (
                known.cursor_ts is not None or last_bridged is None
                or last_bridged <= known.updated_at):
            # Interrupted (a crash, a stop, a failure). Past its first message it goes on
            # forward from its cursor, to the newest: what waited at the gate then was lost
            # with the process, and more may have been said while the bridge was down.
            # (One that never got going and has live messages since catches up instead,
            # below: its newest messages would land after those.)
            remaining = (known.remaining if known.cursor_ts is None
                         else max(known.remaining, self.settings.catch_up_limit))
            state = attrs.evolve(known, persona_id=persona_id, remaining=remaining)
            await self.storage.backfills.put(state)
            return state
        if known is None and last_bridged is None:
            limit = self.settings.initial_for(network)
            if limit <= 0:
                return None
            state = BackfillState(network, room.remote_id, persona_id, RUNNING, None, None,
                                  limit, 0, INITIAL)
        else:
            cursor_ts, token = (known.cursor_ts, known.cursor_token) if known else (None, None)
            live_after = last_bridged is not None and (
                known is None or last_bridged > known.updated_at)
            if live_after and last_bridged is not None and (
                    cursor_ts is None or cursor_ts < last_bridged - _OVERLAP_MS):
                # Live messages came after the history path's last one: start from the
                # newest of them (a little before: clocks differ), never before the history
                # cursor (what a new portal's limit left out stays out).
                cursor_ts, token = last_bridged - _OVERLAP_MS, None
            if cursor_ts is None:
                return None
            state = BackfillState(network, room.remote_id, persona_id, RUNNING, cursor_ts,
                                  token, self.settings.catch_up_limit, 0, CATCH_UP)
        await self.storage.backfills.put(state)
        return state

    def _start(self, reader: HistoryReader, room: RemoteRoom, state: BackfillState) -> None:
        key = (state.network, state.remote_room)
        task = asyncio.create_task(self._run(reader, room, state),
                                   name=f"backfill {state.network} {state.remote_room}")
        self._tasks[key] = task
        task.add_done_callback(lambda _: self._tasks.pop(key, None))

    # ---- how -------------------------------------------------------------------------------

    async def _run(self, reader: HistoryReader, room: RemoteRoom, state: BackfillState
                   ) -> None:
        network = state.network
        outcome = "done"
        told = False
        started = state.sent
        log.info("Backfill (%s) of %s %s: up to %d messages", state.kind, network,
                 room.remote_id, state.remaining)
        try:
            not_before = int((time.time() - self.settings.max_age_days * 86400) * 1000)
            while state.remaining > 0:
                cursor = (HistoryCursor(state.cursor_ts, state.cursor_token)
                          if state.cursor_ts is not None else None)
                # A new portal's newest messages come in one page; later pages go forward.
                limit = (state.remaining if cursor is None
                         else min(self.settings.page_size, state.remaining))
                page = await self._fetch(reader, state.persona_id, room, cursor, not_before,
                                         limit)
                messages = sum(isinstance(e, RemoteMessage) for e in page.events)
                if not told and state.sent + messages >= self.settings.notice_threshold:
                    told = True
                    await self._notice(state, room, f"Bringing in the history of "
                                       f"{_name(room)}: {messages}{'+' if page.more else ''} "
                                       "messages. New messages appear after it.")
                state = await self._send(state, page)
                if not page.more or not page.events:
                    break
        except NoHistory as e:
            outcome = "no_history"
            log.info("No history of %s %s: %s", network, room.remote_id, e)
        except HistoryNotReadable as e:
            outcome = "not_readable"
            log.info("History of %s %s not readable as %s: %s", network, room.remote_id,
                     state.persona_id, e)
        except asyncio.CancelledError:
            # Stopping: the state stays "running", so the next start resumes it from its
            # cursor; what waited at the gate comes again from the history then, after what
            # is still missing, and the gate stays shut so nothing overtakes it meanwhile.
            self.gate.abandon(network, room.remote_id)
            raise
        except Exception:
            outcome = "failed"
            log.exception("Backfill of %s %s failed", network, room.remote_id)
        # The cursor stays (where the next catch-up starts). A run that failed or could not
        # read (no open session yet, say) stays "running": the next rejoin, start or
        # reconnect carries on from its cursor instead of leaving its history out.
        done = outcome in ("done", "no_history")
        await self.storage.backfills.put(attrs.evolve(
            state, status=DONE if done else RUNNING, remaining=0 if done else state.remaining))
        waited = await self.gate.release(network, room.remote_id, self.deliver)
        await self.audit.append(AuditEvent.BACKFILL, persona=state.persona_id, details={
            "network": network, "room": room.remote_id, "kind": state.kind,
            "outcome": outcome, "messages": state.sent - started, "live_waited": waited})
        if told:
            await self._notice(state, room, f"The history of {_name(room)} is in: "
                               f"{state.sent} messages.")

    async def _fetch(self, reader: HistoryReader, persona_id: str, room: RemoteRoom,
                     cursor: HistoryCursor | None, not_before: int, limit: int
                     ) -> HistoryPage:
        """One page; a rate limit is waited out, a passing failure retried with back-off."""
        delay = 1.0
        for attempt in range(1, 7):
            try:
                return await reader.fetch_history(persona_id, room, after=cursor,
                                                  not_before_ms=not_before, limit=limit)
            except RateLimited as e:
                await asyncio.sleep(e.retry_after)
            except (NoHistory, HistoryNotReadable):
                raise
            except Exception as e:
                if attempt == 6:
                    raise
                log.warning("Reading history of %s failed (%s); trying again", room.remote_id,
                            e)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60)
        raise TimeoutError(f"history of {room.remote_id} stayed rate limited")

    async def _send(self, state: BackfillState, page: HistoryPage) -> BackfillState:
        """Send a page through the router in order, paced, recording progress after each
        message: a crash resumes just before the oldest message of the page not sent yet
        (the message map drops what comes again)."""
        network = state.network
        bucket = self.pacer.bucket(network)
        events = page.events
        # After each event: the oldest original time of the page's messages still to come.
        still_to_come: list[int | None] = [None] * len(events)
        oldest: int | None = None
        for i in range(len(events) - 1, -1, -1):
            still_to_come[i] = oldest
            event = events[i]
            if isinstance(event, RemoteMessage):
                oldest = (event.timestamp_ms if oldest is None
                          else min(oldest, event.timestamp_ms))
        token = FROM_HISTORY.set(True)
        try:
            for event, after in zip(events, still_to_come, strict=True):
                await bucket.take()
                room_key = (network, event.room.remote_id)
                if self.in_flight is not None and self.in_flight.busy(room_key):
                    # Perhaps the archive's copy of a send in flight: once it is recorded,
                    # the message map knows it and drops this copy.
                    await self.in_flight.settled(room_key)
                await self.deliver(network, event)
                if not isinstance(event, RemoteMessage):
                    continue
                state = attrs.evolve(state, remaining=max(0, state.remaining - 1),
                                     sent=state.sent + 1)
                if after is not None:
                    # Only the time (inclusive once 1 ms earlier): the network's own
                    # position is known for the page's newest event only.
                    state = attrs.evolve(state, cursor_ts=after - 1, cursor_token=None)
                await self.storage.backfills.put(state)
        finally:
            FROM_HISTORY.reset(token)
        if page.cursor is not None:
            state = attrs.evolve(state, cursor_ts=page.cursor.ts_ms,
                                 cursor_token=page.cursor.token)
        await self.storage.backfills.put(state)
        return state

    async def _notice(self, state: BackfillState, room: RemoteRoom, text: str) -> None:
        if self.tell is None:
            return
        persona = await self.storage.personas.get(state.persona_id)
        owner = persona and await self.storage.profiles.first_matrix_user(persona.profile_id)
        if owner:
            try:
                await self.tell(owner, text)
            except Exception as e:
                log.warning("Could not tell %s about a backfill: %s", owner, e)


def _name(room: RemoteRoom) -> str:
    return room.name or room.remote_id
