"""A Matrix space per profile, made by the bot and shared with the person."""

from __future__ import annotations

from mautrix.appservice import IntentAPI
from mautrix.types import EventType, RoomCreatePreset, UserID


class MatrixSpaces:
    def __init__(self, bot_intent: IntentAPI) -> None:
        self.intent = bot_intent

    async def create_space(self, name: str, invite: list[str]) -> str:
        return await self.intent.create_room(
            name=name,
            topic="RelayForge profile: the rooms bridged for this profile live here.",
            preset=RoomCreatePreset.PRIVATE,
            creation_content={"type": "m.space"},
            invitees=[UserID(mxid) for mxid in invite],
        )

    async def rename_space(self, space_mxid: str, name: str) -> None:
        await self.intent.set_room_name(space_mxid, name)

    async def add_to_space(self, space: str, room: str) -> None:
        """Make a portal a child of a profile's space (a room can be in several spaces)."""
        await self.intent.send_state_event(space, EventType.SPACE_CHILD,
                                           {"via": [self.intent.domain]}, state_key=room)
