"""Portals: the Matrix room for each remote room, created the first time it is needed."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext

from mautrix.appservice import IntentAPI
from mautrix.types import Membership, RoomID, UserID

from ..db import Portal, PortalStore
from ..networks.base import RemoteRoom

log = logging.getLogger("relayforge.portals")

#: Portal rows kept in memory by default (`bridge.portal_cache_size`).
PORTAL_CACHE_SIZE = 10_000


class Portals:
    """Portal rows, kept in memory once read: every relayed message looks its portal up.

    The rows change only through this class (created in `ensure`/`adopt`, renamed with
    `set_name`); code that changes the `portal` table another way must call `forget`. A row
    without a Matrix room yet is never kept, so a room set on it later is always seen.
    At most `max_cached` rows are kept (`bridge.portal_cache_size`), the least recently
    used dropped first: a bridge with many rooms reads the rarely used ones again.
    """

    def __init__(self, bot_intent: IntentAPI, store: PortalStore,
                 max_cached: int = PORTAL_CACHE_SIZE) -> None:
        self.max_cached = max(1, max_cached)
        self.bot_intent = bot_intent
        self.store = store
        # {"m.federate": False} with data residency on: portals stay on this homeserver.
        self.federation: dict[str, bool] = {}
        # One lock per remote room, so two messages arriving together create one Matrix room.
        # With how many hold or wait for it, so it is dropped when nobody does.
        self._locks: dict[tuple[str, str], tuple[asyncio.Lock, list[int]]] = {}
        self._by_remote: OrderedDict[tuple[str, str], Portal] = OrderedDict()
        self._by_mxid: dict[RoomID, Portal] = {}
        self.on_forget: list[Callable[[str, str], None]] = []
        # Held while a portal is made, against other workers (bridge/db/lease.py).
        self.exclusive: Callable[[str], AbstractAsyncContextManager[None]] = (
            lambda _name: nullcontext())
        # Counts changes: a read that awaited the database during one must not keep its row.
        self._changes = 0
        # Called with each portal `ensure` creates (to place it in its profile's space).
        self.on_created: list[Callable[[Portal], Awaitable[None]]] = []
        # Called with (network, room, persona id) of each direct chat `ensure` creates, once
        # its room exists and before `ensure` returns, outside the room's lock: the core's
        # backfill brings in the conversation's past (it sends into the room itself) before
        # the message that made the portal, which the history brings along, is sent.
        self.on_direct_created: list[Callable[[str, RemoteRoom, str], Awaitable[None]]] = []

    @property
    def cached(self) -> int:
        """How many portal rows are in memory now (never more than `max_cached`)."""
        return len(self._by_remote)

    async def get(self, network: str, remote_id: str) -> Portal | None:
        portal = self._by_remote.get((network, remote_id))
        if portal is not None:
            self._by_remote.move_to_end((network, remote_id))
            return portal
        before = self._changes
        portal = await self.store.get(network, remote_id)
        if portal is not None and self._changes == before:
            self._keep(portal)
        return portal

    async def get_by_mxid(self, room_id: RoomID) -> Portal | None:
        portal = self._by_mxid.get(room_id)
        if portal is not None:
            self._by_remote.move_to_end((portal.network, portal.remote_id))
            return portal
        # Not a portal (a management room, say) is not remembered: it is asked again.
        before = self._changes
        portal = await self.store.get_by_mxid(room_id)
        if portal is not None and self._changes == before:
            self._keep(portal)
        return portal

    async def ensure(self, network: str, room: RemoteRoom, receiver: UserID | None, *,
                     persona_id: str | None = None, rule_id: str | None = None) -> Portal:
        """The portal of a remote room, created when missing. `persona_id` is the persona
        whose direct chat it is (the session that saw it); `rule_id` the rule mapping it."""
        created = False
        async with self._room_lock((network, room.remote_id)):
            portal = await self.get(network, room.remote_id)
            if portal is None:
                async with self.exclusive(f"portal:{network}:{room.remote_id}"):
                    # Another worker may have made it while this one waited for the lock.
                    portal = await self.store.get(network, room.remote_id)
                    if portal is None:
                        portal = await self._create(network, room, receiver, persona_id,
                                                    rule_id)
                        for hook in self.on_created:
                            await hook(portal)
                        created = True
            if not created:
                portal = await self._own(portal, persona_id, rule_id)
                if receiver:
                    await self._invite(portal.mxid, receiver)
        if created and persona_id and not rule_id:
            for direct_hook in self.on_direct_created:
                try:
                    await direct_hook(network, room, persona_id)
                except Exception:
                    # The conversation goes on without its past rather than not at all.
                    log.exception("Could not bring in the history of direct chat %s %s",
                                  network, room.remote_id)
        return portal

    async def adopt(self, network: str, room: RemoteRoom, room_id: RoomID, *,
                    rule_id: str | None = None) -> Portal:
        """Use an existing Matrix room (the bot must be in it) as the portal of a remote room."""
        async with self._room_lock((network, room.remote_id)):
            portal = await self.get(network, room.remote_id)
            if portal is not None:
                return await self._own(portal, None, rule_id)
            if not await self.bot_intent.state_store.is_joined(room_id, self.bot_intent.mxid):
                await self.bot_intent.join_room_by_id(room_id)
            return self._changed(await self.store.insert(network, room.remote_id, room_id,
                                                         room.name or room.remote_id,
                                                         rule_id=rule_id))

    async def _own(self, portal: Portal, persona_id: str | None, rule_id: str | None
                   ) -> Portal:
        """Record who an existing portal belongs to, if it does not say yet; refuse to mix
        another persona's direct chat into it."""
        if persona_id and portal.receiver not in (None, persona_id):
            raise PortalOfAnotherPersona(portal)
        changed = False
        if persona_id and portal.receiver is None and portal.rule_id is None:
            changed = await self.store.claim_receiver(portal.network, portal.remote_id,
                                                      persona_id)
        if rule_id and portal.rule_id is None:
            await self.store.set_rule(portal.network, portal.remote_id, rule_id)
            changed = True
        if not changed:
            return portal
        self.forget(portal.network, portal.remote_id)
        fresh = await self.store.get(portal.network, portal.remote_id)
        assert fresh is not None  # portals are never deleted
        self._keep(fresh)
        return fresh

    async def set_name(self, network: str, remote_id: str, name: str | None) -> None:
        async with self._room_lock((network, remote_id)):
            await self.store.set_name(network, remote_id, name)
            self.forget(network, remote_id)

    def forget(self, network: str, remote_id: str) -> None:
        """Drop a portal's row from memory; the next lookup reads the database. Other
        workers sharing the database drop theirs too (`on_forget`)."""
        self.drop_cached(network, remote_id)
        for hook in self.on_forget:
            hook(network, remote_id)

    def drop_cached(self, network: str, remote_id: str) -> None:
        self._changes += 1
        portal = self._by_remote.pop((network, remote_id), None)
        if portal is not None and portal.mxid is not None:
            self._by_mxid.pop(portal.mxid, None)

    @asynccontextmanager
    async def _room_lock(self, key: tuple[str, str]) -> AsyncIterator[None]:
        lock, users = self._locks.setdefault(key, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._locks[key]

    def _keep(self, portal: Portal) -> None:
        if portal.mxid is None:
            return
        self._by_remote[(portal.network, portal.remote_id)] = portal
        self._by_remote.move_to_end((portal.network, portal.remote_id))
        self._by_mxid[portal.mxid] = portal
        while len(self._by_remote) > self.max_cached:
            _, oldest = self._by_remote.popitem(last=False)
            if oldest.mxid is not None and self._by_mxid.get(oldest.mxid) is oldest:
                del self._by_mxid[oldest.mxid]

    def _changed(self, portal: Portal) -> Portal:
        self.forget(portal.network, portal.remote_id)
        self._keep(portal)
        return portal

    async def _create(self, network: str, room: RemoteRoom, receiver: UserID | None,
                      persona_id: str | None, rule_id: str | None) -> Portal:
        name = room.name or room.remote_id
        room_id = await self.bot_intent.create_room(
            name=name,
            topic=room.topic,
            invitees=[receiver] if receiver else [],
            creation_content=dict(self.federation) or None,
        )
        log.info("Created portal %s for %s room %s", room_id, network, room.remote_id)
        return self._changed(await self.store.insert(network, room.remote_id, room_id, name,
                                                     receiver=persona_id, rule_id=rule_id))

    async def _invite(self, room_id: RoomID, user: UserID) -> None:
        # The state store keeps membership in memory (CachedASStateStore), and mautrix's own
        # event handler records every m.room.member event before the bridge sees it, so this
        # costs no database read per message, and someone who left or refused the invite
        # is invited again by the next message.
        member = await self.bot_intent.state_store.get_member(room_id, user)
        if member is None or member.membership not in (Membership.INVITE, Membership.JOIN):
            await self.bot_intent.invite_user(room_id, user)


class PortalOfAnotherPersona(Exception):
    """A direct chat seen by one persona arrived under the remote id of another persona's
    direct chat: the connector must name direct chats per receiving account. Nothing is
    mixed into the other person's room."""

    def __init__(self, portal: Portal) -> None:
        super().__init__(f"{portal.network} room {portal.remote_id} is the direct chat of "
                         f"persona {portal.receiver}")
        self.portal = portal
