"""Double puppeting: a person's own Matrix user speaks for their remote accounts.

The Matrix persona (network "matrix", `bridge/networks/matrix`) is linked, paused, resumed
and revoked like any other; its connector holds the open logins. This module finds, for a
remote sender, the person's active Matrix persona, acts as it (mautrix marks every event it
sends so with `fi.mau.double_puppet_source`, which the dispatcher never bridges back out),
takes the ghost out of rooms the real user is in, and joins the user to their portals and
spaces without invites to accept.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from mautrix.appservice import DOUBLE_PUPPET_SOURCE_KEY, IntentAPI
from mautrix.errors import MatrixError, MatrixRequestError
from mautrix.types import RoomID, UserID
from yarl import URL

from ..audit import AuditEvent, AuditLog
from ..db import Portal, Storage
from ..db.persona import Persona, PersonaStatus
from .ghosts import Ghosts

log = logging.getLogger("relayforge.double_puppet")

#: The network name of Matrix personas (the `relayforge.networks` entry point).
MATRIX = "matrix"
#: A Matrix persona acting for the remote accounts of its own profile only (else of all).
THIS_PROFILE = "this_profile"
_TOKEN_GONE = ("M_UNKNOWN_TOKEN", "M_MISSING_TOKEN")


def sent_as_double_puppet(content: Any, bridge_name: str) -> bool:
    """Whether an event's content says this bridge sent it as the person (loop prevention)."""
    try:
        return content[DOUBLE_PUPPET_SOURCE_KEY] == bridge_name
    except (KeyError, TypeError, AttributeError):
        return False


class MatrixLogin(Protocol):
    user_id: str
    base_url: str
    token: str
    as_token: bool


class MatrixLogins(Protocol):
    """What the Matrix persona connector offers the Matrix side."""

    on_opened: Callable[[str], Awaitable[None]] | None
    on_refused: Callable[[str, str], Awaitable[None]] | None

    def configure(self, double_puppet: Mapping[str, Any], own_domain: str,
                  own_url: str) -> None: ...

    def login_of(self, persona_id: str) -> MatrixLogin | None: ...

    async def refused(self, persona_id: str, reason: str) -> None: ...


class OwnUser:
    """One person's Matrix user acting for one remote account (`OwnMatrixUser`)."""

    def __init__(self, puppets: DoublePuppets, persona: Persona, account: str,
                 intent: IntentAPI, acting_for: str) -> None:
        self.puppets, self.persona, self.account = puppets, persona, account
        self.intent = intent
        self.acting_for = acting_for

    async def acted(self, action: str, room_id: RoomID, event_id: str | None) -> None:
        await self.puppets.audit.append(
            AuditEvent.IMPERSONATED_SEND, actor=self.account, account=self.account,
            profile=self.persona.profile_id, persona=self.persona.id,
            details={"action": action, "network": MATRIX, "channel": room_id,
                     "remote_id": event_id, "acting_for": self.acting_for})

    async def refused(self, error: Exception) -> bool:
        if not (isinstance(error, MatrixRequestError) and (
                error.errcode in _TOKEN_GONE or error.http_status == 401)):
            return False
        await self.puppets.token_refused(self.persona.id, f"{error.errcode}: {error.message}")
        return True


class DoublePuppets:
    """`OwnMatrixUsers` for the router, on the Matrix persona connector's logins."""

    def __init__(self, bot_intent: IntentAPI, storage: Storage, audit: AuditLog,
                 ghosts: Ghosts) -> None:
        self.bot_intent = bot_intent
        self.storage = storage
        self.audit = audit
        self.ghosts = ghosts
        self.logins: MatrixLogins | None = None
        # Set by the app: a persona whose token stopped working turns read-only (and its
        # person is told to relink), like a refused send on any network.
        self.on_read_only: Callable[[str, str], Awaitable[None]] | None = None
        # One intent per open login (a new login, after a relink, gets a new one).
        self._intents: dict[str, tuple[MatrixLogin, IntentAPI]] = {}

    def attach(self, connector: Any, double_puppet: Mapping[str, Any], own_domain: str,
               own_url: str) -> None:
        """Use the Matrix persona connector's logins (None: the Matrix network is off, and
        with it double puppeting)."""
        if connector is None:
            return
        self.logins = connector
        connector.configure(double_puppet, own_domain, own_url)
        connector.on_opened = self.opened
        connector.on_refused = self._read_only

    # ---- acting ---------------------------------------------------------------------------

    async def _matrix_persona(self, network: str, remote_id: str
                              ) -> tuple[Persona, str] | None:
        remote = await self.storage.personas.by_external(network, remote_id)
        if remote is None or remote.status != PersonaStatus.ACTIVE:
            return None  # a remote person not linked here (or paused there) keeps a ghost
        account = await self.storage.profiles.account_of(remote.profile_id)
        if account is None:
            return None
        for persona in await self.storage.personas.of_account(account, MATRIX,
                                                              (PersonaStatus.ACTIVE,)):
            if THIS_PROFILE not in persona.scopes or persona.profile_id == remote.profile_id:
                return persona, account
        return None

    async def _intent(self, persona: Persona) -> IntentAPI | None:
        login = self.logins.login_of(persona.id) if self.logins else None
        if login is None:
            self._intents.pop(persona.id, None)
            return None
        known = self._intents.get(persona.id)
        if known is not None and known[0] is login:
            return known[1]
        # A URL, not a str: mautrix keeps a user's API and assigns a new base URL as given.
        intent = self.bot_intent.user(UserID(login.user_id), login.token, URL(login.base_url),
                                      as_token=login.as_token)
        # A real user exists already: mautrix must not try to register it.
        await self.bot_intent.state_store.registered(intent.mxid)
        self._intents[persona.id] = (login, intent)
        return intent

    async def acting_for(self, network: str, remote_id: str, room_id: RoomID
                         ) -> OwnUser | None:
        if self.logins is None:
            return None
        found = await self._matrix_persona(network, remote_id)
        if found is None:
            return None
        persona, account = found
        intent = await self._intent(persona)
        if intent is None:
            return None
        try:
            await intent.ensure_joined(room_id)
        except MatrixRequestError as e:
            if e.errcode in _TOKEN_GONE or e.http_status == 401:
                await self.token_refused(persona.id, f"{e.errcode}: {e.message}")
                return None
            raise
        await self._ghost_out(network, remote_id, room_id)
        return OwnUser(self, persona, account, intent, f"{network}:{remote_id}")

    async def _ghost_out(self, network: str, remote_id: str, room_id: RoomID) -> None:
        """Two of the same person in one room would be one too many: the ghost leaves."""
        ghost = self.ghosts.ghost_mxid(network, remote_id)
        if not await self.bot_intent.state_store.is_joined(room_id, ghost):
            return
        try:
            await self.ghosts.intent_for(ghost).leave_room(room_id)
        except MatrixError as e:
            log.warning("Could not take %s out of %s: %s", ghost, room_id, e)
            return
        await self.bot_intent.state_store.left(room_id, ghost)

    async def token_refused(self, persona_id: str, reason: str) -> None:
        """The homeserver no longer takes the persona's token: the ghost speaks again from
        now on, and the person is asked to relink."""
        self._intents.pop(persona_id, None)
        if self.logins is not None:
            await self.logins.refused(persona_id, reason)  # calls `_read_only` back

    async def _read_only(self, persona_id: str, reason: str) -> None:
        self._intents.pop(persona_id, None)
        if self.on_read_only is not None:
            await self.on_read_only(persona_id, reason)

    # ---- joining the person's rooms --------------------------------------------------------

    async def opened(self, persona_id: str) -> None:
        """A Matrix persona is in use (linked, resumed, the bridge started): its user joins
        the spaces of the profiles it acts for, without an invite to accept."""
        persona = await self.storage.personas.get(persona_id)
        intent = await self._intent(persona) if persona else None
        if persona is None or intent is None:
            return
        account = await self.storage.profiles.account_of(persona.profile_id)
        profiles = await self.storage.profiles.for_account(account) if account else []
        for profile in profiles:
            if profile.space_mxid and (THIS_PROFILE not in persona.scopes
                                       or profile.id == persona.profile_id):
                await self._join(intent, RoomID(profile.space_mxid))

    async def portal_created(self, portal: Portal) -> None:
        """A new direct-chat portal: the owner's Matrix user (if double puppeted) joins."""
        if portal.mxid is None or portal.receiver is None:
            return
        persona = await self.storage.personas.get(portal.receiver)
        if persona is None:
            return
        found = await self._matrix_persona(persona.platform, persona.external_user_id)
        intent = await self._intent(found[0]) if found else None
        if intent is not None:
            await self._join(intent, RoomID(portal.mxid))

    async def _join(self, intent: IntentAPI, room_id: RoomID) -> None:
        try:
            await intent.ensure_joined(room_id)
        except MatrixError as e:
            log.warning("%s could not join %s: %s", intent.mxid, room_id, e)
