"""May this person hand an existing Matrix room to the bridge as a portal?

A mapping into an existing room (`map ... --room`, the API's `target_room`) makes everything
said there go out to the remote room, as the person with `--relay`. So the person must be
joined to the room and hold the power to change who may do what in it (the level for
`m.room.power_levels`), read from the room's real state, not from a cache. One check, used by
every way a rule is made.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from mautrix.appservice import IntentAPI
from mautrix.errors import MatrixError
from mautrix.types import (
    EventType,
    Membership,
    PowerLevelStateEventContent,
    RoomAlias,
    RoomID,
    StateEvent,
    UserID,
)

log = logging.getLogger("relayforge.room_rights")


class RoomNotYours(Exception):
    """The person may not hand this room to the bridge; the message says what is missing."""


RoomCheck = Callable[[list[StateEvent], str], str | None]


async def check_room_rights(bot: IntentAPI, room: str, requester: str,
                            also: RoomCheck | None = None) -> RoomID:
    """The room's ID when `requester` may adopt it as a portal; RoomNotYours otherwise. The
    bot must be in the room to read its state: it joins, and leaves again when it refuses.
    `also` is a further check of the room's state (data residency), refusing with a text."""
    room_id = await _room_id(bot, room)
    was_joined = await _bot_joined(bot, room_id)
    if not was_joined:
        try:
            await bot.join_room_by_id(room_id)
        except MatrixError as e:
            raise RoomNotYours(f"I cannot join {room}: invite {bot.mxid} to it first "
                               f"({e.message}).") from e
    try:
        state = await bot.get_state(room_id)
        problem = _missing_right(state, UserID(requester), room)
        if problem is None and also is not None:
            problem = also(state, room)
    except MatrixError as e:
        problem = f"I cannot read the state of {room} ({e.message})."
    if problem is None:
        return room_id
    if not was_joined:
        try:
            await bot.leave_room(room_id, reason="Not mapped: the requester may not change "
                                 "this room")
        except MatrixError as e:
            log.warning("Could not leave %s after refusing to map it: %s", room_id, e.message)
    raise RoomNotYours(problem)


async def _room_id(bot: IntentAPI, room: str) -> RoomID:
    if room.startswith("#") and ":" in room:
        try:
            return (await bot.resolve_room_alias(RoomAlias(room))).room_id
        except MatrixError as e:
            raise RoomNotYours(f"No room is called {room} ({e.message}).") from e
    # Room IDs of room version 12 on have no ":server" part.
    if not room.startswith("!") or len(room) < 2 or any(c.isspace() for c in room):
        raise RoomNotYours(f'"{room}" is not a Matrix room ID (!id) or alias (#name:server).')
    return RoomID(room)


async def _bot_joined(bot: IntentAPI, room_id: RoomID) -> bool:
    try:
        return room_id in await bot.get_joined_rooms()
    except MatrixError:
        return False


def _missing_right(state: list[StateEvent], requester: UserID, room: str) -> str | None:
    create: StateEvent | None = None
    levels = PowerLevelStateEventContent()
    membership = Membership.LEAVE
    for event in state:
        if event.type == EventType.ROOM_CREATE:
            create = event
        elif event.type == EventType.ROOM_POWER_LEVELS:
            levels = event.content
        elif event.type == EventType.ROOM_MEMBER and event.state_key == requester:
            membership = event.content.membership
    if membership != Membership.JOIN:
        return (f"You are not joined to {room}: join it first. Only a member who may change "
                "the room can map a remote room into it.")
    needed = levels.get_event_level(EventType.ROOM_POWER_LEVELS)
    have = levels.get_user_level(requester, create)
    if have < needed:
        return (f"Your power level in {room} is {have}; mapping into it needs {needed} (the "
                "level to change m.room.power_levels). Ask a room admin to raise yours or to "
                "map it.")
    return None
