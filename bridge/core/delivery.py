"""The durable outbound queue: what people send in Matrix reaches the remote network, in order,
exactly once, even when the network or the bridge fails on the way.

Every Matrix event for a portal is written to `outbound` before its appservice transaction is
acknowledged. One worker per Matrix room sends the room's events oldest first; an event that
fails for a passing reason blocks the events behind it (order matters more than speed) and is
retried with exponential back-off and jitter, or after the network's Retry-After. An event
whose persona lost its credentials is parked until the person relinks, without blocking others.
An event that keeps failing is given up: the person is told where they wrote it and in their
management room, and `retry` puts it back in line.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import attrs
from mautrix.types import (
    BeeperMessageStatusEventContent,
    Event,
    EventID,
    EventType,
    MessageEvent,
    MessageStatus,
    MessageStatusReason,
    ReactionEvent,
    RedactionEvent,
    RelatesTo,
    RelationType,
    RoomID,
    UserID,
)

from ..audit import AuditEvent, AuditLog
from ..db import Portal, Storage
from ..db.message import MessageKind, MessageRow
from ..db.outbound import OutboundRow, OutboundState
from ..db.persona import PersonaStatus
from ..metrics import Metrics
from ..networks.base import CredentialsRejected, RateLimited, RemoteRoom, SendRefused, Unsupported
from ..security.impersonation import ImpersonationRefused
from .authority import NeedsRelink, NotAllowedHere
from .matrix_side import PortalDirectory
from .router import DeliveryFailed, HeldForConfirmation, NetworkUnavailable, Router
from .send_kind import send_kind

log = logging.getLogger("relayforge.delivery")

#: How long (seconds) a "sent" status may wait for its room's queue to pause: while a burst
#: drains, each status is one more event for the homeserver to take beside the person's
#: messages, so they follow the burst instead of slowing it.
STATUS_LAG = 2.0

#: How many rooms known to have an empty queue are remembered (see `Delivery._empty`); a room
#: forgotten only takes the longer way (its worker reads the queue's head back).
EMPTY_ROOMS_KEPT = 10_000


class RoomGate(Protocol):
    """Which worker sends a room's queue when several share the database (core/workers.py)."""

    #: Whether other workers share the database: then they may queue into any room.
    shared: bool

    async def may_send(self, room: str, network: str) -> bool: ...

    async def sent_elsewhere(self, room: str, network: str) -> None: ...


class Notifier(Protocol):
    async def reply(self, room_id: RoomID, event_id: EventID | None, text: str) -> None: ...

    async def tell(self, mxid: UserID, text: str) -> bool: ...

    async def send_event(self, room_id: RoomID, event_type: EventType,
                         content: BeeperMessageStatusEventContent) -> None: ...


@attrs.frozen
class DeliverySettings:
    max_attempts: int = 8
    max_age_seconds: int = 24 * 3600
    backoff_seconds: float = 1.0
    backoff_max_seconds: float = 300.0
    status_events: bool = True
    # A "sent" status for every message delivered at the first try, not only for those whose
    # client was shown "pending" or "failed": it costs the homeserver one more event per
    # message (halving what a busy room can carry), so it is off by default.
    status_every_send: bool = False

    @classmethod
    def from_config(cls, get: Callable[[str], Any]) -> DeliverySettings:
        """From the config's `delivery` section (`get("max_attempts")` and so on)."""
        return cls(**{f.name: get(f.name) for f in attrs.fields(cls)})


def backoff(attempts: int, settings: DeliverySettings, rng: random.Random) -> float:
    """Seconds before attempt `attempts + 1`: exponential, capped, with "full jitter" so
    many senders that failed together do not all come back at the same moment."""
    ceiling = min(settings.backoff_max_seconds,
                  settings.backoff_seconds * 2 ** max(attempts - 1, 0))
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


@attrs.frozen
class _Handed:
    """An event just queued as the head of its room's queue, with its row as written."""

    row: OutboundRow
    event: Event


class Delivery:
    def __init__(self, storage: Storage, router: Router, portals: PortalDirectory,
                 notifier: Notifier, audit: AuditLog, metrics: Metrics,
                 settings: DeliverySettings | None = None) -> None:
        self.storage = storage
        self.store = storage.outbound
        self.router = router
        self.portals = portals
        self.notifier = notifier
        self.audit = audit
        self.metrics = metrics
        self.settings = settings or DeliverySettings()
        self._rng = random.Random()
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._wake: dict[str, asyncio.Event] = {}
        self._stopping = False
        self._statuses: dict[str, asyncio.Task[None]] = {}  # the latest status sent per room
        # Set while the room's worker is not sending (none runs, or it waits for a retry).
        self._quiet: dict[str, asyncio.Event] = {}
        # Waits until a network's connector has started (they start in the background).
        self.network_ready: Callable[[str], Awaitable[None]] | None = None
        # Called with (persona id, reason) when a persona turns read-only.
        self.on_read_only: list[Callable[[str, str], Awaitable[None]]] = []
        # With several workers: only the room's owner sends its queue; None: this process.
        self.gate: RoomGate | None = None
        # Rooms whose worker found nothing left to send, with nothing queued there since:
        # the next event queued there is the head of its queue, so it is handed to a new
        # worker as it is (`_Handed`), which neither reads it back nor decodes it again. Only
        # while no other process can queue into the room (see `_alone`). Insertion-ordered,
        # so the oldest is forgotten first (EMPTY_ROOMS_KEPT).
        self._empty: dict[str, None] = {}
        # Rooms whose next event is being written to be handed on: a kick meanwhile (a
        # retry put something back in line) takes the room back to the usual way.
        self._handing: set[str] = set()

    # ---- entry points ------------------------------------------------------------------------

    async def start(self) -> None:
        """Resume whatever was waiting when the bridge last stopped (or crashed)."""
        for room in await self.store.rooms_waiting():
            self._kick(room)

    async def stop(self) -> None:
        """Stop sending; anything not finished stays queued for the next start."""
        self._stopping = True
        workers = list(self._workers.values())
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        self._workers.clear()
        # Statuses are a courtesy: give them a moment, never hold up shutdown for long.
        if statuses := list(self._statuses.values()):
            _, late = await asyncio.wait(statuses, timeout=5)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)

    async def enqueue(self, portal: Portal, evt: Event) -> None:
        """Keep the event durably, then let the room's worker send it."""
        room = evt.room_id
        # The room's queue is empty and nobody sends it: the event is the head, and it is
        # sent next. It is written marked in flight (the connector is called next), which
        # saves the worker that write too; a crash before the call only costs the network
        # lookup that a row in flight gets on the next start.
        straight = room in self._empty and not self._running(room) and not self._stopping
        if straight:
            del self._empty[room]
            self._handing.add(room)
        row = await self.store.add(evt.event_id, room, portal.network, portal.remote_id,
                                   evt.sender, evt.serialize(), in_flight=straight)
        if row is not None:
            self.metrics.queue_events.labels(outcome="queued").inc()
        # Still so after the write: no kick meanwhile (which clears `_handing`), no worker.
        handed = straight and row is not None and room in self._handing
        self._handing.discard(room)
        if handed and row is not None and not self._running(room) and not self._stopping:
            self._start(room, _Handed(row, evt))
        else:
            self._kick(room)

    async def retry(self, sender: str) -> int:
        """Put the person's given-up events back in line; how many rooms they are in."""
        rooms = await self.store.requeue(OutboundState.FAILED, sender=sender)
        for room in rooms:
            self._kick(room)
        return len(rooms)

    async def relinked(self, persona_id: str) -> None:
        """The persona has working credentials again: send what waited for it, in order."""
        for room in await self.store.requeue(OutboundState.PARKED, persona_id=persona_id):
            self._kick(room)

    async def idle(self) -> None:
        """Wait until every worker has nothing left to do right now (for orderly shutdown
        and benchmarks)."""
        while workers := [w for w in [*self._workers.values(), *self._statuses.values()]
                          if not w.done()]:
            await asyncio.gather(*workers, return_exceptions=True)

    # ---- the per-room workers ----------------------------------------------------------------

    def kick(self, room: str) -> None:
        """Send what waits in the room's queue (another worker queued it, or left it)."""
        self._kick(room)

    def _kick(self, room: str) -> None:
        if self._stopping:
            return
        # Something may wait in the room's queue that this process did not put there.
        self._empty.pop(room, None)
        self._handing.discard(room)
        self._wake.setdefault(room, asyncio.Event()).set()
        if not self._running(room):
            self._start(room)

    def _running(self, room: str) -> bool:
        worker = self._workers.get(room)
        return worker is not None and not worker.done()

    def _start(self, room: str, first: _Handed | None = None) -> None:
        self._workers[room] = asyncio.create_task(self._run(room, first),
                                                  name=f"outbound {room}")

    def _alone(self) -> bool:
        """No other worker can queue into this process's rooms."""
        return self.gate is None or not self.gate.shared

    def _emptied(self, room: str) -> None:
        if not self._alone():
            return
        self._empty[room] = None
        if len(self._empty) > EMPTY_ROOMS_KEPT:
            del self._empty[next(iter(self._empty))]

    async def _run(self, room: str, first: _Handed | None = None) -> None:
        quiet = self._quiet.setdefault(room, asyncio.Event())
        try:
            await self._drain(room, quiet, first)
        finally:
            quiet.set()
            if self._quiet.get(room) is quiet and self._workers.get(room) is None:
                del self._quiet[room]

    async def _drain(self, room: str, quiet: asyncio.Event, first: _Handed | None) -> None:
        wake = self._wake.setdefault(room, asyncio.Event())
        while not self._stopping:
            wake.clear()
            evt: Event | None = None
            if first is not None:
                row, evt, first = first.row, first.event, None
            else:
                try:
                    row = await self.store.head(room)
                except Exception:
                    log.exception("Could not read the outbound queue of %s", room)
                    await asyncio.sleep(1)
                    continue
            if row is None:
                if wake.is_set():
                    continue  # something was queued while we looked
                # No await between the check and leaving: a later _kick starts a new worker.
                self._workers.pop(room, None)
                self._emptied(room)
                return
            if self.gate is not None and not await self.gate.may_send(room, row.network):
                # Another worker sends this room's queue: wake it, and leave the room to it.
                self._workers.pop(room, None)
                await self.gate.sent_elsewhere(room, row.network)
                return
            delay = row.next_attempt / 1000 - time.time()
            if delay > 0:
                quiet.set()
                try:
                    await asyncio.wait_for(wake.wait(), delay)
                except TimeoutError:
                    pass
                continue
            if self.network_ready is not None:
                await self.network_ready(row.network)  # it stays queued meanwhile
            quiet.clear()
            await self._attempt(row, evt)
            # On SQLite the queue's statements run on the loop without waiting, and a
            # connector may answer at once: the rest of the bridge gets a turn between events.
            await asyncio.sleep(0)

    async def _attempt(self, row: OutboundRow, handed: Event | None = None) -> None:
        """`handed`: the event as it was queued a moment ago (`_Handed`), never attempted."""
        evt = handed if handed is not None else Event.deserialize(row.event)
        portal = await self.portals.get_by_mxid(RoomID(row.room_mxid))
        if portal is None:
            log.warning("Dropping %s from the outbound queue of %s: the room is no longer a "
                        "portal, so there is nowhere to send it", evt.event_id, row.room_mxid)
            await self.store.done(row.seq)
            return
        if row.in_flight and handed is None and isinstance(evt, MessageEvent):
            try:
                if await self._already_sent(row, portal, evt):
                    return
            except Exception as e:  # asking failed: sending blind could duplicate it
                log.warning("Could not look up %s at %s: %s", evt.event_id, portal.network, e)
                await self._retry_later(row, evt, portal, f"could not check whether "
                                        f"{portal.network} already has it ({e})",
                                        maybe_sent=True)
                return
        if handed is None:  # a handed event was written in flight
            await self.store.mark_in_flight(row.seq)
        try:
            await self._send(portal, evt, row.before_relaying)
        except HeldForConfirmation as e:
            log.info("%s waits for its sender's confirmation (first message into %s)",
                     evt.event_id, portal.remote_id)
            await self.store.done(row.seq)  # it waits in held_send for "confirm"
            await self.notifier.reply(evt.room_id, evt.event_id, str(e))
        except NeedsRelink as e:
            await self._park(row, evt, e.persona_id, str(e), announce=False)
        except NotAllowedHere as e:
            log.warning("Not sending %s to %s: %s", evt.event_id, portal.network, e)
            await self.store.done(row.seq)
            await self._status(evt, portal, MessageStatus.FAIL, str(e),
                               MessageStatusReason.NO_PERMISSION)
            await self.notifier.reply(evt.room_id, evt.event_id, str(e))
        except NetworkUnavailable as e:
            await self._give_up(row, evt, portal, str(e))
        except (SendRefused, ImpersonationRefused, DeliveryFailed) as e:
            await self._failed(row, evt, portal, e)
        except Exception as e:
            log.exception("Sending %s failed unexpectedly", evt.event_id)
            await self._retry_later(row, evt, portal, f"internal error: {type(e).__name__}",
                                    maybe_sent=True)
        else:
            await self.store.done(row.seq)
            self.metrics.queue_events.labels(outcome="sent").inc()
            # A message whose client was told "pending" or "failed" (a retry, a wait for a
            # relink, a given-up message put back) is always told it went through.
            if row.attempts or row.last_error or self.settings.status_every_send:
                await self._status(evt, portal, MessageStatus.SUCCESS)

    async def _already_sent(self, row: OutboundRow, portal: Portal, evt: Event) -> bool:
        """An attempt at this message called the connector and no outcome was recorded (the
        bridge crashed, or the call timed out): if the network has it, record it as sent
        instead of sending a duplicate."""
        if await self.storage.messages.get_by_mxid(evt.event_id):
            found = True  # recorded, but the crash came before the row was deleted
            log.info("%s was sent and recorded before the bridge stopped: not sending it "
                     "again", evt.event_id)
        else:
            connector = self.router.connectors.get(portal.network)
            if connector is None:
                return False
            # A little before the first attempt: clocks of the bridge and network differ.
            result = await connector.find_sent(RemoteRoom(portal.remote_id, portal.name),
                                               evt.event_id, row.created_at - 60_000)
            found = result is not None
            if result is not None:
                log.info("%s already has %s (as %s): not sending it again", portal.network,
                         evt.event_id, result.remote_id)
                await self.storage.messages.insert(MessageRow(
                    network=portal.network, remote_room=portal.remote_id,
                    remote_id=result.remote_id, kind=MessageKind.MESSAGE, mxid=evt.event_id,
                    room_mxid=RoomID(row.room_mxid), sender_mxid=UserID(row.sender)))
        if found:
            await self.store.done(row.seq)
            self.metrics.queue_events.labels(outcome="sent").inc()
            await self._status(evt, portal, MessageStatus.SUCCESS)
        return found

    async def _send(self, portal: Portal, evt: Event,
                    before: tuple[bool, str | None] | None = None) -> None:
        if isinstance(evt, MessageEvent):
            await self.router.handle_matrix_message(portal, evt, before)
        elif isinstance(evt, ReactionEvent):
            await self.router.handle_matrix_reaction(portal, evt)
        elif isinstance(evt, RedactionEvent):
            await self.router.handle_matrix_redaction(portal, evt)

    # ---- outcomes ----------------------------------------------------------------------------

    async def _failed(self, row: OutboundRow, evt: Event, portal: Portal,
                      error: SendRefused | ImpersonationRefused | DeliveryFailed) -> None:
        log.warning("Sending %s to %s failed (attempt %d): %s", evt.event_id, portal.network,
                    row.attempts + 1, error)
        if isinstance(error, CredentialsRejected) and error.persona_id:
            await self._park(row, evt, error.persona_id, str(error), announce=True)
        elif isinstance(error, ImpersonationRefused):
            # The bridge refused its own token: the person's credentials and the network are
            # not at fault, so the persona stays as it is. A spent token (expired on the way,
            # used already) is minted afresh by the next attempt; anything else is a fault
            # in the bridge that retrying does not mend.
            reason = f"the bridge's own authorization check refused it ({error})"
            if error.retryable:
                await self._retry_later(row, evt, portal, reason, internal=True,
                                        status="Retrying with a fresh authorization")
            else:
                await self._give_up(row, evt, portal, reason, row.attempts + 1, internal=True)
        elif isinstance(error, Unsupported):
            await self._give_up(row, evt, portal, str(error))
        elif isinstance(error, RateLimited):
            # The network said when: not before, and it does not count as a failed attempt.
            self.metrics.queue_events.labels(outcome="rate_limited").inc()
            if self._too_old(row):
                await self._give_up(row, evt, portal, str(error))
                return
            await self.store.reschedule(row.seq, row.attempts,
                                        int((time.time() + error.retry_after) * 1000),
                                        str(error))
        else:
            # A timeout or a dropped connection may come after the network took it.
            await self._retry_later(row, evt, portal, str(error), maybe_sent=True)

    def _too_old(self, row: OutboundRow) -> bool:
        return time.time() * 1000 - row.created_at > self.settings.max_age_seconds * 1000

    async def _retry_later(self, row: OutboundRow, evt: Event, portal: Portal,
                           reason: str, *, internal: bool = False,
                           status: str = "Retrying", maybe_sent: bool = False) -> None:
        """`maybe_sent`: the network may have the event all the same (a timeout), so the
        next attempt looks it up before sending again."""
        attempts = row.attempts + 1
        if attempts >= self.settings.max_attempts or self._too_old(row):
            await self._give_up(row, evt, portal, reason, attempts, internal=internal)
            return
        self.metrics.queue_events.labels(outcome="retry").inc()
        delay = backoff(attempts, self.settings, self._rng)
        await self.store.reschedule(row.seq, attempts, int((time.time() + delay) * 1000),
                                    reason, keep_in_flight=maybe_sent)
        if attempts == 1:
            await self._status(evt, portal, MessageStatus.PENDING, status)

    async def _give_up(self, row: OutboundRow, evt: Event, portal: Portal, reason: str,
                       attempts: int | None = None, *, internal: bool = False) -> None:
        """`internal`: the bridge itself stopped it (not the network), and says so."""
        await self.store.fail(row.seq, attempts if attempts is not None else row.attempts,
                              reason)
        self.metrics.queue_events.labels(outcome="failed").inc()
        what = send_kind(evt).words
        await self._status(evt, portal, MessageStatus.RETRIABLE, f"Not delivered: {reason}")
        if internal:
            said = (f"Not delivered: RelayForge did not send your {what}: {reason}. This is a "
                    f"fault in the bridge, not on {portal.network}, and your {portal.network} "
                    "account is fine (tell the bridge's admin).")
        else:
            said = f"Not delivered: your {what} could not be sent to {portal.network}."
        await self.notifier.reply(evt.room_id, evt.event_id,
                                  f"{said} Send \"retry\" in your management room to try "
                                  "again.")
        await self.notifier.tell(UserID(row.sender),
                                 f"Your {what} in {portal.name or portal.remote_id} "
                                 f"({portal.network}) was not delivered after "
                                 f"{max(attempts or row.attempts, 1)} attempt(s): {reason}. "
                                 "Send \"retry\" to try again.")

    async def _park(self, row: OutboundRow, evt: Event, persona_id: str, reason: str, *,
                    announce: bool) -> None:
        await self.store.park(row.seq, persona_id, reason)
        self.metrics.queue_events.labels(outcome="parked").inc()
        portal = await self.portals.get_by_mxid(RoomID(row.room_mxid))
        if portal is not None:
            await self._status(evt, portal, MessageStatus.PENDING,
                               "Waiting for you to relink the account")
        if announce:
            await self.read_only(persona_id, reason)
            persona = await self.storage.personas.get(persona_id)
            if persona is not None:
                ref = f"{persona.platform}:{persona.external_user_id}"
                await self.notifier.reply(evt.room_id, evt.event_id, (
                    f"Waiting: {persona.platform} refused the bridge's access to {ref}. This "
                    f"and what you send after it will be sent once you relink: send "
                    f"\"relink {ref}\" in your management room."))

    async def read_only(self, persona_id: str, reason: str) -> None:
        """The network refused the persona's credentials: stop sending as it, keep receiving,
        and tell the person how to resume."""
        persona = await self.storage.personas.get(persona_id)
        if persona is None or persona.status == PersonaStatus.READ_ONLY:
            return
        await self.storage.personas.set_status(persona_id, PersonaStatus.READ_ONLY)
        account = await self.storage.profiles.account_of(persona.profile_id)
        await self.audit.append(AuditEvent.READ_ONLY, account=account,
                                profile=persona.profile_id, persona=persona_id,
                                details={"platform": persona.platform, "reason": reason[:200]})
        waiting = await self.store.waiting_for(persona_id)
        ref = f"{persona.platform}:{persona.external_user_id}"
        for owner in await self.storage.accounts.matrix_users(account) if account else []:
            await self.notifier.tell(UserID(owner), (
                f"{persona.platform} refused the bridge's access to {ref} ({reason}). "
                f"It is read-only now: messages from {persona.platform} keep arriving, and "
                f"what you send there waits in order ({waiting} waiting). To send them, "
                f"link the account again: relink {ref}"))
        for hook in self.on_read_only:
            await hook(persona_id, reason)

    async def _status(self, evt: Event, portal: Portal, status: MessageStatus,
                      message: str | None = None,
                      reason: MessageStatusReason = MessageStatusReason.NETWORK_ERROR) -> None:
        """A send status next to the person's message, for clients that show one (the
        `com.beeper.message_send_status` events the mautrix bridges send too)."""
        if not self.settings.status_events:
            return
        content = BeeperMessageStatusEventContent(
            relates_to=RelatesTo(RelationType.REFERENCE, evt.event_id),
            network=portal.network, status=status)
        if status != MessageStatus.SUCCESS:
            content.reason, content.message = reason, message
        # Sent beside the worker, not by it: waiting for a Matrix round trip per status would
        # halve how fast a room's queue drains. Chained per room so statuses keep their order.
        previous = self._statuses.get(evt.room_id)
        # Only "sent" waits for a pause; what went wrong is said at once (after what came
        # before it in the room, so statuses keep their order).
        quiet = self._quiet.get(evt.room_id) if status == MessageStatus.SUCCESS else None
        until = time.monotonic() + STATUS_LAG
        task = asyncio.create_task(self._send_status(previous, evt, content, quiet, until))
        self._statuses[evt.room_id] = task
        task.add_done_callback(lambda t, room=evt.room_id: self._statuses.get(room) is t
                               and self._statuses.pop(room))

    async def _send_status(self, previous: asyncio.Task[None] | None, evt: Event,
                           content: BeeperMessageStatusEventContent,
                           quiet: asyncio.Event | None, until: float) -> None:
        if previous is not None:
            await asyncio.gather(previous, return_exceptions=True)
        if quiet is not None and (left := until - time.monotonic()) > 0:
            try:
                await asyncio.wait_for(quiet.wait(), left)
            except TimeoutError:
                pass  # a long queue: the status follows at most STATUS_LAG behind
        try:
            await self.notifier.send_event(evt.room_id, EventType.BEEPER_MESSAGE_STATUS,
                                           content)
        except Exception:
            log.warning("Could not send the send status of %s", evt.event_id, exc_info=True)

