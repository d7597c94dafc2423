"""A Matrix space per profile, made by the bot and shared with the person; portals live in it."""

from __future__ import annotations

import asyncio
import logging

from mautrix.appservice import IntentAPI
from mautrix.errors import IntentError, MatrixError, MatrixRequestError
from mautrix.types import EventType, RoomCreatePreset, RoomID, UserID

from ..db import Portal, Storage
from ..networks.base import Workspace

log = logging.getLogger("relayforge.spaces")


class MatrixSpaces:
    def __init__(self, bot_intent: IntentAPI, storage: Storage | None = None) -> None:
        self.intent = bot_intent
        self.storage = storage
        # One sub-space per workspace even when two of its rooms are mapped at once.
        self._making: dict[tuple[str, str, str], asyncio.Lock] = {}

    async def create_space(self, name: str, invite: list[str]) -> str:
        return await self.intent.create_room(
            name=name,
            topic="RelayForge profile: the rooms bridged for this profile live here.",
            preset=RoomCreatePreset.PRIVATE,
            creation_content={"type": "m.space"},
            invitees=[UserID(mxid) for mxid in invite],
        )

    async def workspace_space(self, profile_id: str, profile_space: str, network: str,
                              workspace: Workspace, invite: list[str]) -> str:
        """The profile's sub-space for a workspace (a Discord server), made on first use as
        a child of the profile's space and recorded, so every later room reuses it."""
        assert self.storage is not None
        store = self.storage.workspace_spaces
        key = (profile_id, network, workspace.remote_id)
        async with self._making.setdefault(key, asyncio.Lock()):
            space = await store.get(*key)
            if space is not None:
                return space
            space = await self.intent.create_room(
                name=workspace.name,
                topic=f"RelayForge: the rooms of {workspace.name} on {network} in this profile.",
                preset=RoomCreatePreset.PRIVATE, creation_content={"type": "m.space"},
                invitees=[UserID(mxid) for mxid in invite])
            await self.add_to_space(profile_space, space)
            return await store.add(*key, space)

    async def rename_space(self, space_mxid: str, name: str) -> None:
        await self.intent.set_room_name(space_mxid, name)

    async def add_to_space(self, space: str, room: str) -> None:
        """Make a portal a child of a profile's space (a room can be in several spaces), and
        name the space as the portal's parent so clients show where the room belongs.

        Writing the same link again changes nothing (the homeserver keeps identical state), so
        this is safe to repeat after a restart."""
        via = {"via": [self.intent.domain]}
        await self.intent.send_state_event(RoomID(space), EventType.SPACE_CHILD, via,
                                           state_key=room)
        try:
            await self.intent.send_state_event(RoomID(room), EventType.SPACE_PARENT,
                                               {**via, "canonical": True}, state_key=space)
        except (MatrixRequestError, IntentError) as e:
            # A room the person brought (`map --room`) may not let the bot change its state
            # (mautrix refuses before asking the homeserver when the bot's level is too low);
            # the space still lists it, which is what clients need to show it there.
            log.warning("Could not name space %s as the parent of %s: %s", space, room, e)


class PortalSpaces:
    """Puts each new direct-chat portal into the space of the profile whose persona it
    belongs to. Rooms a rule brings in are placed by the mapping rules (also on restart)."""

    def __init__(self, storage: Storage, spaces: MatrixSpaces) -> None:
        self.storage = storage
        self.spaces = spaces

    async def portal_created(self, portal: Portal) -> None:
        if portal.mxid is None or portal.receiver is None:
            return
        persona = await self.storage.personas.get(portal.receiver)
        if persona is None:
            return
        space = await self.storage.profiles.space_of(persona.profile_id)
        if space is None:
            return
        try:
            await self.spaces.add_to_space(space, portal.mxid)
        except MatrixError as e:
            # The message that made the portal must still arrive; the room is only unfiled.
            log.warning("Could not add portal %s to space %s: %s", portal.mxid, space, e)
