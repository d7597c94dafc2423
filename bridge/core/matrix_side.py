"""What the core needs from the Matrix side, and no more: ghosts for remote people and portals
for remote rooms. `bridge.matrix` implements both (`Ghosts`, `Portals`); the core names only
these shapes, so `matrix/` may use the core without the two folders importing each other."""

from __future__ import annotations

from typing import Protocol

from mautrix.appservice import IntentAPI
from mautrix.types import RoomID, UserID

from ..db import Portal
from ..networks.base import RemoteRoom, RemoteUser


class GhostDirectory(Protocol):
    """The Matrix users that stand for remote people."""

    bot_intent: IntentAPI

    def ghost_mxid(self, network: str, remote_id: str) -> UserID: ...

    def ghost_remote_id(self, network: str, mxid: str) -> str | None:
        """The remote id a ghost of `network` stands for; None when `mxid` is not one."""

    async def ensure(self, network: str, user: RemoteUser) -> IntentAPI:
        """The ghost's intent, registered and with the remote person's current profile."""


class PortalDirectory(Protocol):
    """The Matrix rooms that stand for remote rooms."""

    bot_intent: IntentAPI

    async def get(self, network: str, remote_id: str) -> Portal | None: ...

    async def get_by_mxid(self, room_id: RoomID) -> Portal | None: ...

    async def ensure(self, network: str, room: RemoteRoom, receiver: UserID | None, *,
                     persona_id: str | None = None, rule_id: str | None = None) -> Portal:
        """The portal of a remote room, created (and `receiver` invited) when missing."""

    async def adopt(self, network: str, room: RemoteRoom, room_id: RoomID, *,
                    rule_id: str | None = None) -> Portal:
        """An existing Matrix room made the portal of a remote room."""


class OwnMatrixUser(Protocol):
    """A person's own Matrix user, acting for one of their remote accounts (double
    puppeting): what the router sends with instead of their ghost."""

    intent: IntentAPI

    async def acted(self, action: str, room_id: RoomID, event_id: str | None) -> None:
        """Record one act done through it (the audit trail's impersonated send)."""

    async def refused(self, error: Exception) -> bool:
        """A send through it failed: True when the homeserver no longer takes its token
        (it is then out of use, and the router sends as the ghost instead)."""


class OwnMatrixUsers(Protocol):
    """Who, if anyone, speaks in Matrix as the remote person themselves."""

    async def acting_for(self, network: str, remote_id: str, room_id: RoomID
                         ) -> OwnMatrixUser | None:
        """The person's own Matrix user for the remote account `remote_id`, joined to
        `room_id` (their ghost out of it), or None when they have none in use."""
