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
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import attrs

from ..audit import AuditEvent, AuditLog
from ..db import Storage
from ..db.backfill import DONE, RUNNING, BackfillState
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

log = logging.getLogger("relayforge.backfill")

INITIAL, CATCH_UP = "initial", "catch_up"
# How far before the last bridged message a catch-up starts when the history cursor is
# older: clocks differ a little, and the message map drops what comes twice.
_OVERLAP_MS = 5000


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
Tell = Callable[[Any, str], Awaitable[Any]]


class Backfill:
    def __init__(self, storage: Storage, connectors: Mapping[str, Connector], gate: PortalGate,
                 deliver: Deliver, audit: AuditLog, settings: BackfillSettings,
                 tell: Tell | None = None) -> None:
        self.storage = storage
        self.connectors = connectors
        self.gate = gate
        # The router's own handling of a remote event (not the gate's door).
        self.deliver = deliver
        self.audit = audit
        self.settings = settings
        self.tell = tell
        self.pacer = Pacer(settings.rate, settings.burst)
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}

    def reads_history(self, network: str) -> bool:
        connector = self.connectors.get(network)
        return connector is not None and history_reader(connector) is not None

    # ---- when ------------------------------------------------------------------------------

    async def portal_ready(self, network: str, room: RemoteRoom, persona_id: str) -> None:
        """A mapped room was (re)joined: a new portal gets its newest messages, a known one
        what it missed. Runs in the background; live events wait at the gate meanwhile."""
        reader = self._reader(network)
        if reader is None or (network, room.remote_id) in self._tasks:
            return
        if not self.gate.hold(network, room.remote_id):
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
        the persona's mapped rooms (or those named) catch up."""
        persona = await self.storage.personas.get(persona_id)
        if persona is None:
            return
        wanted = set(remote_room_ids) if remote_room_ids is not None else None
        for rule in await self.storage.rules.for_profile_network(persona.profile_id, network):
            if "*" in rule.remote or (wanted is not None and rule.remote not in wanted):
                continue
            portal = await self.storage.portals.get(network, rule.remote)
            if portal is not None and portal.mxid:
                await self.portal_ready(network, RemoteRoom(portal.remote_id, portal.name),
                                        persona_id)

    async def resume(self) -> None:
        """At start-up: backfills a crash or a stop interrupted carry on where they were."""
        for state in await self.storage.backfills.running():
            reader = self._reader(state.network)
            portal = await self.storage.portals.get(state.network, state.remote_room)
            if reader is None or portal is None or (state.network, state.remote_room) in \
                    self._tasks or not self.gate.hold(state.network, state.remote_room):
                continue
            log.info("Resuming the backfill of %s %s (%d sent)", state.network,
                     state.remote_room, state.sent)
            self._start(reader, RemoteRoom(portal.remote_id, portal.name), state)

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

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
        if known is not None and known.status == RUNNING:
            return attrs.evolve(known, persona_id=persona_id)
        last_bridged = await self.storage.messages.latest_timestamp(network, room.remote_id)
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
                sent = await self._send(network, page.events)
                state = attrs.evolve(
                    state, remaining=max(0, state.remaining - messages),
                    sent=state.sent + sent,
                    cursor_ts=page.cursor.ts_ms if page.cursor else state.cursor_ts,
                    cursor_token=page.cursor.token if page.cursor else state.cursor_token)
                await self.storage.backfills.put(state)
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
            # Stopping: the state stays "running", so the next start resumes it.
            await self.gate.release(network, room.remote_id, self.deliver)
            raise
        except Exception:
            outcome = "failed"
            log.exception("Backfill of %s %s failed", network, room.remote_id)
        # The cursor stays (where the next catch-up starts); the run is over either way.
        await self.storage.backfills.put(attrs.evolve(state, status=DONE, remaining=0))
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

    async def _send(self, network: str, events: Iterable[RemoteEvent]) -> int:
        """Send through the router in order, paced; returns how many messages went in."""
        bucket = self.pacer.bucket(network)
        sent = 0
        token = FROM_HISTORY.set(True)
        try:
            for event in events:
                await bucket.take()
                await self.deliver(network, event)
                sent += isinstance(event, RemoteMessage)
        finally:
            FROM_HISTORY.reset(token)
        return sent

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
