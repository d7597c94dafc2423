"""Portals: the Matrix room for each remote room, created the first time it is needed."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict

from mautrix.appservice import IntentAPI
from mautrix.types import RoomID, UserID

from ..db import Portal, PortalStore
from ..networks.base import RemoteRoom

log = logging.getLogger("relayforge.portals")


class Portals:
    def __init__(self, bot_intent: IntentAPI, store: PortalStore) -> None:
        self.bot_intent = bot_intent
        self.store = store
        # One lock per remote room, so two messages arriving together create one Matrix room.
        self._locks: defaultdict[tuple[str, str], asyncio.Lock] = defaultdict(asyncio.Lock)

    async def get_by_mxid(self, room_id: RoomID) -> Portal | None:
        return await self.store.get_by_mxid(room_id)

    async def ensure(self, network: str, room: RemoteRoom, receiver: UserID | None) -> Portal:
        async with self._locks[(network, room.remote_id)]:
            portal = await self.store.get(network, room.remote_id)
            if portal is None:
                portal = await self._create(network, room, receiver)
            elif receiver:
                await self._invite(portal.mxid, receiver)
            return portal

    async def adopt(self, network: str, room: RemoteRoom, room_id: RoomID) -> Portal:
        """Use an existing Matrix room (the bot must be in it) as the portal of a remote room."""
        async with self._locks[(network, room.remote_id)]:
            portal = await self.store.get(network, room.remote_id)
            if portal is not None:
                return portal
            if not await self.bot_intent.state_store.is_joined(room_id, self.bot_intent.mxid):
                await self.bot_intent.join_room_by_id(room_id)
            return await self.store.insert(network, room.remote_id, room_id,
                                           room.name or room.remote_id)

    async def _create(self, network: str, room: RemoteRoom, receiver: UserID | None) -> Portal:
        name = room.name or room.remote_id
        room_id = await self.bot_intent.create_room(
            name=name,
            topic=room.topic,
            invitees=[receiver] if receiver else [],
        )
        log.info("Created portal %s for %s room %s", room_id, network, room.remote_id)
        return await self.store.insert(network, room.remote_id, room_id, name)

    async def _invite(self, room_id: RoomID, user: UserID) -> None:
        member = await self.bot_intent.state_store.get_member(room_id, user)
        if member is None or member.membership.value not in ("invite", "join"):
            await self.bot_intent.invite_user(room_id, user)
