"""Each active persona's session on its network, opened from its sealed credentials."""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from ..audit import AuditLog
from ..db import Storage
from ..db.persona import Persona, PersonaStatus
from ..networks.base import Connector
from ..security.access_tokens import AccessTokens, RefreshFn
from ..security.vault import Vault, VaultError

log = logging.getLogger("relayforge.sessions")
# A read-only persona still receives: only sending as it waits for the person to relink.
_RECEIVING = (PersonaStatus.ACTIVE, PersonaStatus.READ_ONLY)


class SessionGate(Protocol):
    """Which worker has a persona's session open when several share the database."""

    async def may_open(self, persona_id: str, network: str) -> bool: ...

    async def closed(self, persona_id: str) -> None: ...

    async def persona_changed(self, persona_id: str) -> None: ...


class PersonaSessions:
    def __init__(self, storage: Storage, vault: Vault, connectors: dict[str, Connector],
                 audit: AuditLog) -> None:
        self.storage = storage
        self.vault = vault
        self.connectors = connectors
        self.tokens = AccessTokens(vault, audit)
        # The vault's persona key is the persona's id.
        self.tokens.on_refreshed.append(lambda persona: storage.personas.set_checked(persona))
        for connector in connectors.values():
            connector.access_token = self.access_token
        # With several workers (core/workers.py): a session is open on one of them only.
        self.gate: SessionGate | None = None
        # Personas whose session this process opened (and has not closed since), and one
        # lock each: a take-over or another worker's word can ask to open a session while
        # the start-up is opening it, and two connections for one account must not race.
        self.opened: set[str] = set()
        self._opening: dict[str, asyncio.Lock] = {}

    async def access_token(self, persona_id: str, refresh: RefreshFn) -> str:
        """A persona's current access token (networks that rotate tokens): memory only,
        refreshed from the refresh token sealed in the vault before it expires; audited."""
        persona = await self.storage.personas.get(persona_id)
        if persona is None:
            raise VaultError(f"persona {persona_id} is gone")
        account = await self.storage.profiles.account_of(persona.profile_id)
        profile, persona_ref = persona.vault_ref
        return await self.tokens.get(account=account, profile=profile, persona=persona_ref,
                                     refresh=refresh)

    async def _owner(self, persona: Persona) -> str | None:
        return await self.storage.profiles.first_matrix_user(persona.profile_id)

    async def credentials(self, persona: Persona) -> dict[str, str]:
        return {field: await self.vault.open_text(*persona.vault_ref, field)
                for field in await self.vault.fields(*persona.vault_ref)}

    async def open(self, persona: Persona, *, unless_open: bool = False) -> bool:
        """Open the persona's session here (again, with its current credentials, unless
        `unless_open`); True if a session was opened now."""
        connector = self.connectors.get(persona.platform)
        if connector is None or persona.status not in _RECEIVING:
            return False
        lock = self._opening.setdefault(persona.id, asyncio.Lock())
        async with lock:
            if unless_open and persona.id in self.opened:
                return False
            if self.gate is not None and not await self.gate.may_open(persona.id,
                                                                      persona.platform):
                return False  # open on another worker
            owner = await self._owner(persona)
            try:
                credentials = await self.credentials(persona)
            except VaultError:
                log.exception("Credentials of persona %s do not open", persona.id)
                await self.storage.personas.set_status(persona.id,
                                                       PersonaStatus.NEEDS_REAUTH)
                return False
            await connector.open_session(persona.id, persona.external_user_id, credentials,
                                         owner or "")
            self.opened.add(persona.id)
            return True

    async def open_all(self) -> None:
        """Open every active persona's session, all at once."""
        personas = []
        for network in self.connectors:
            personas += await self.storage.personas.on_platform(network, _RECEIVING)
        results = await asyncio.gather(*(self.open(p) for p in personas),
                                       return_exceptions=True)
        for persona, result in zip(personas, results, strict=True):
            if isinstance(result, Exception):
                log.error("Could not open the session of persona %s: %s", persona.id, result)

    async def follow(self, persona: Persona) -> None:
        """Open or close a persona's session to match its status (pause, resume, revoke)."""
        if self.gate is not None:
            await self.gate.persona_changed(persona.id)  # its owner follows it too
        if persona.status in _RECEIVING:
            await self.open(persona)
        else:
            await self.close(persona)

    async def close(self, persona: Persona) -> None:
        self.tokens.drop(*persona.vault_ref)
        connector = self.connectors.get(persona.platform)
        self.opened.discard(persona.id)
        if connector is not None:
            await connector.close_session(persona.id)
        if self.gate is not None:
            await self.gate.closed(persona.id)

    # ---- for the other workers (by id: they read the persona afresh) ------------------------

    async def wanted(self, network: str) -> list[str]:
        """The personas of a network that should have a session open somewhere."""
        if network not in self.connectors:
            return []
        return [p.id for p in await self.storage.personas.on_platform(network, _RECEIVING)]

    async def follow_id(self, persona_id: str) -> None:
        if persona := await self.storage.personas.get(persona_id):
            if persona.status in _RECEIVING:
                await self.open(persona)
            else:
                await self.close(persona)

    async def close_id(self, persona_id: str) -> None:
        """This worker lost the persona's lease: close the session here only."""
        persona = await self.storage.personas.get(persona_id)
        connector = self.connectors.get(persona.platform) if persona else None
        self.opened.discard(persona_id)
        if connector is not None:
            await connector.close_session(persona_id)
