"""A Matrix space per profile, made by the bot and shared with the person; portals live in it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from contextlib import suppress
from typing import Any

from mautrix.appservice import IntentAPI
from mautrix.errors import IntentError, MatrixError, MatrixRequestError
from mautrix.types import EventType, RoomCreatePreset, RoomID, UserID

from ..db import Portal, Storage
from ..networks.base import Workspace

log = logging.getLogger("relayforge.spaces")

#: How long a new account's spaces wait for the person's first answer before they are made
#: anyway (someone who never writes a command still gets them).
AFTER_ANSWER_SECONDS = 5.0


class MatrixSpaces:
    def __init__(self, bot_intent: IntentAPI, storage: Storage | None = None,
                 after_answer_seconds: float = AFTER_ANSWER_SECONDS) -> None:
        self.intent = bot_intent
        self.storage = storage
        # {"m.federate": False} with data residency on: spaces stay on this homeserver.
        self.federation: dict[str, bool] = {}
        # One sub-space per workspace even when two of its rooms are mapped at once.
        self._making: dict[tuple[str, str, str], asyncio.Lock] = {}
        self.after_answer_seconds = after_answer_seconds
        # One space per profile, however many callers want it at once; emptied as they finish.
        self._profile_locks: dict[str, asyncio.Lock] = {}
        # New people whose spaces wait for the bot's first answer to them.
        self._awaiting_answer: dict[str, asyncio.Event] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def create_space(self, name: str, invite: list[str]) -> str:
        return await self.intent.create_room(
            name=name,
            topic="RelayForge profile: the rooms bridged for this profile live here.",
            preset=RoomCreatePreset.PRIVATE,
            creation_content={"type": "m.space", **self.federation},
            invitees=[UserID(mxid) for mxid in invite],
        )

    # ---- each profile's own space, made after the first answer ------------------------------

    def make_later(self, account_id: str, person: str | None) -> None:
        """A new account's profile spaces, made in the background once the bot has answered
        `person` (two `createRoom` calls must not hold up their first command). What is owed
        is in the database (a profile without `space_mxid`): a restart makes it on start
        (`make_owed`), and anything that needs the space makes it first (`profile_space`)."""
        answered = None
        if person:
            answered = self._awaiting_answer.setdefault(person, asyncio.Event())
        self._spawn(self._after_answer(account_id, person, answered))

    def answered(self, person: str) -> None:
        """The bot has answered `person`: their spaces, if they wait, are made now."""
        if (event := self._awaiting_answer.pop(person, None)) is not None:
            event.set()

    async def _after_answer(self, account_id: str, person: str | None,
                            answered: asyncio.Event | None) -> None:
        if answered is not None:
            with suppress(TimeoutError):
                await asyncio.wait_for(answered.wait(), self.after_answer_seconds)
            if person and self._awaiting_answer.get(person) is answered:
                del self._awaiting_answer[person]
        await self.make_owed(account_id)

    def make_owed_in_background(self) -> None:
        """On start: every space a stop in between left unmade."""
        self._spawn(self.make_owed())

    async def make_owed(self, account_id: str | None = None) -> int:
        """Every profile (of one account, or of all) still without its space gets it now;
        how many were made. A homeserver error leaves the profile owed for the next time."""
        assert self.storage is not None
        made = 0
        for profile_id in await self.storage.profiles.without_space(account_id):
            try:
                made += await self.profile_space(profile_id) is not None
            except MatrixError as e:
                log.warning("Could not make the space of profile %s yet: %s", profile_id, e)
        return made

    async def profile_space(self, profile_id: str) -> str | None:
        """The profile's space, made now if it has none yet; None if there is no profile."""
        assert self.storage is not None
        lock = self._profile_locks.setdefault(profile_id, asyncio.Lock())
        try:
            async with lock:
                profile = await self.storage.profiles.get(profile_id)
                if profile is None or profile.space_mxid:
                    return profile.space_mxid if profile else None
                members = await self.storage.accounts.matrix_users(profile.account_id)
                space = await self.create_space(profile.name, members)
                # Another worker may have made one meanwhile: the first one recorded stays.
                return await self.storage.profiles.set_space_if_missing(profile_id, space)
        finally:
            if not lock.locked():
                self._profile_locks.pop(profile_id, None)

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(self._logged(work), name="profile-spaces")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        # A stop right after start cancels the task before it ran: close the work so it is
        # not reported as never awaited (it is still owed in the database).
        task.add_done_callback(lambda _: work.close())

    @staticmethod
    async def _logged(work: Coroutine[Any, Any, Any]) -> None:
        try:
            await work
        except Exception:
            # Still owed in the database: made on next use or next start.
            log.warning("Making profile spaces failed", exc_info=True)

    async def stop(self) -> None:
        """Unmade spaces stay owed in the database for the next start."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # ---- sub-spaces and children ------------------------------------------------------------

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
                preset=RoomCreatePreset.PRIVATE,
                creation_content={"type": "m.space", **self.federation},
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
        try:
            # A space still owed (made after the first answer) is made now.
            space = await self.spaces.profile_space(persona.profile_id)
            if space is None:
                return
            await self.spaces.add_to_space(space, portal.mxid)
        except MatrixError as e:
            # The message that made the portal must still arrive; the room is only unfiled.
            log.warning("Could not add portal %s to space %s: %s", portal.mxid, space, e)
