"""Direct chats' history through the core's backfill: a new 1:1 conversation's portal starts
with its recent past, and after a restart or a reconnect what was said in it meanwhile comes
in, read as the persona whose conversation it is (never anyone else).

Mapped rooms reach the backfill through their rules (core/mapping.py); direct chats have no
rule, so their portals are found by the persona they belong to (db/direct_portals.py).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from ..db import Storage
from ..db.direct_portals import DirectPortals
from ..db.persona import PersonaStatus
from ..db.portal import Portal
from ..networks.base import RemoteRoom
from .backfill import Backfill, JoinHold

log = logging.getLogger("relayforge.backfill")

# Personas whose sessions receive: only their conversations are read.
_RECEIVING = (PersonaStatus.ACTIVE, PersonaStatus.READ_ONLY)


class DirectHistory:
    def __init__(self, storage: Storage, backfill: Backfill) -> None:
        self.storage = storage
        self.backfill = backfill
        self.direct = DirectPortals(storage.db)
        # Gates held from before the sessions open until the start-up catch-up takes them.
        self._held: dict[tuple[str, str], JoinHold] = {}

    async def portal_created(self, network: str, room: RemoteRoom, persona_id: str) -> None:
        """A direct chat's portal was just made for its first live message: its past comes
        in first, and this returns once it is in, so that message (which the history brings
        along; the message map drops it when it is sent again) lands after it, not before.
        (`Portals.on_direct_created`.)"""
        await self.backfill.portal_ready(network, room, persona_id)
        await self.backfill.finished(network, room.remote_id)

    async def history_gap(self, network: str, persona_id: str,
                          remote_room_ids: Iterable[str] | None = None) -> None:
        """A connector may have missed events: the persona's mapped rooms (or those named)
        and all its direct chats catch up. (`Router.on_history_gap`.)

        A gap is the session's (it reconnected, its session was invalid), so every direct
        chat of it may have missed something, whatever shared rooms the connector names:
        it names the mapped rooms it knows, and has no list of the persona's direct chats."""
        ids = list(remote_room_ids) if remote_room_ids is not None else None
        await self.backfill.history_gap(network, persona_id, ids)
        for portal in await self.direct.of_persona(persona_id, network):
            await self._catch_up(network, portal.remote_id, portal.name, persona_id)

    async def hold_all(self) -> None:
        """At start-up, before the sessions open: the direct chats' live events wait (what
        the server kept for the person while the bridge was stopped arrives as soon as a
        session opens, all at once), until `catch_up_all` brings them in from the history
        in order (the message map drops the copies that waited)."""
        for portal, _ in await self._receiving():
            key = (portal.network, portal.remote_id)
            if key not in self._held and self.backfill.gate.hold(*key):
                self._held[key] = JoinHold(portal.network, portal.remote_id, room_held=True)

    async def catch_up_all(self) -> None:
        """At start-up, after the rules rejoined their rooms: every direct chat of a persona
        that receives catches up on what was said while the bridge was stopped."""
        held, self._held = self._held, {}
        try:
            for portal, persona_id in await self._receiving():
                hold = held.pop((portal.network, portal.remote_id), None)
                await self._catch_up(portal.network, portal.remote_id, portal.name,
                                     persona_id, hold)
        finally:
            for hold in held.values():  # no longer to be caught up (unlinked meanwhile)
                if hold.room_held and hold.remote_room is not None:
                    await self.backfill.gate.release(hold.network, hold.remote_room,
                                                     self.backfill.deliver)

    async def _receiving(self) -> list[tuple[Portal, str]]:
        """The direct-chat portals of personas that receive, on networks that read history
        and whose sessions this worker serves."""
        return [(portal, persona_id)
                for portal, persona_id in await self.direct.receiving(_RECEIVING)
                if self.backfill.reads_history(portal.network)
                and self.backfill.serves(portal.network)]

    async def _catch_up(self, network: str, remote_id: str, name: str | None,
                        persona_id: str, hold: JoinHold | None = None) -> None:
        try:
            await self.backfill.portal_ready(network, RemoteRoom(remote_id, name, direct=True),
                                             persona_id, hold)
        except Exception:
            log.exception("Could not catch up direct chat %s %s", network, remote_id)
