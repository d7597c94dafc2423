"""Who acts on the remote side when a Matrix user writes in a portal, and with what token.

The sender's own persona on that network acts, with a fresh impersonation token for exactly
this action in exactly this room. Without one, a rule in relay mode lets the rule owner's
persona carry the message ("Name: message"); otherwise the person is told how to link.
"""

from __future__ import annotations

import attrs

from ..db import Portal, Storage
from ..db.persona import Persona, PersonaStatus
from ..security.capabilities import Capabilities
from ..security.impersonation import Action, Target, TokenMinter
from ..security.policy import Policy


class NotAllowedHere(Exception):
    """The sender cannot act in this portal; the message tells them why and what to do."""


class NeedsRelink(NotAllowedHere):
    """The sender's persona lost its credentials: what they send waits for them to relink."""

    def __init__(self, persona: Persona) -> None:
        ref = f"{persona.platform}:{persona.external_user_id}"
        if persona.status == PersonaStatus.NEEDS_REAUTH:  # stopped by anomaly detection
            super().__init__(f"Waiting: {ref} needs re-authentication after repeated failed "
                             "checks, so this is not sent yet. In your management room: mfa "
                             f"verify CODE, then resume {ref} (or relink {ref}).")
        else:
            super().__init__(f"Waiting: {ref} must be linked again before this can be sent. "
                             f"Send \"relink {ref}\" in your management room.")
        self.persona_id = persona.id


# Personas whose sends wait (queued, not dropped) until the person relinks or re-authenticates.
_WAITING = (PersonaStatus.READ_ONLY, PersonaStatus.NEEDS_REAUTH)


@attrs.frozen
class Acting:
    token: str
    persona: Persona
    # Set when relaying for someone without a persona: prefix the text with their name.
    relayed_for: str | None = None


class Authority:
    def __init__(self, storage: Storage, minter: TokenMinter,
                 policy: Policy | None = None, capabilities: Capabilities | None = None
                 ) -> None:
        self.storage = storage
        self.minter = minter
        self.policy = policy or Policy(None)
        self.capabilities = capabilities

    async def _personas(self, account_id: str, network: str) -> list[Persona]:
        rows = await self.storage.db.fetch(
            "SELECT pe.id FROM persona pe JOIN profile pr ON pr.id = pe.profile_id "
            "WHERE pr.account_id=$1 AND pe.platform=$2 AND pe.status=$3 "
            "ORDER BY pe.created_at", account_id, network, PersonaStatus.ACTIVE.value)
        personas = [await self.storage.personas.get(r["id"]) for r in rows]
        return [p for p in personas if p is not None]

    async def _inactive(self, account_id: str, network: str) -> bool:
        return bool(await self.storage.db.fetchval(
            "SELECT COUNT(*) FROM persona pe JOIN profile pr ON pr.id = pe.profile_id "
            "WHERE pr.account_id=$1 AND pe.platform=$2 AND pe.status<>$3",
            account_id, network, PersonaStatus.ACTIVE.value))

    async def _raise_if_waiting(self, account_id: str, network: str) -> None:
        persona_id = await self.storage.db.fetchval(
            "SELECT pe.id FROM persona pe JOIN profile pr ON pr.id = pe.profile_id "
            "WHERE pr.account_id=$1 AND pe.platform=$2 AND pe.status IN ($3, $4) "
            "ORDER BY pe.created_at LIMIT 1", account_id, network, *(s.value for s in _WAITING))
        persona = await self.storage.personas.get(persona_id) if persona_id else None
        if persona is not None:
            raise NeedsRelink(persona)

    async def act(self, sender: str, portal: Portal, action: Action) -> Acting:
        refusal = self.policy.refusal(portal.network, portal.remote_id, action)
        if refusal is not None:
            raise NotAllowedHere(refusal)
        rules = await self.storage.rules.for_remote(portal.network, portal.remote_id)
        if rules and all(r.inbound_only for r in rules):
            raise NotAllowedHere("This room is bridged inbound only: messages written here "
                                 f"are not sent to {portal.network}.")
        account = await self.storage.accounts.by_mxid(sender)
        persona = None
        if account is not None:
            personas = await self._personas(account.id, portal.network)
            mine = {r.profile_id for r in rules if r.account_id == account.id}
            persona = next((p for p in personas if p.profile_id in mine), None) or (
                personas[0] if personas else None)
        relayed_for = None
        if persona is None and account is not None:
            await self._raise_if_waiting(account.id, portal.network)
        if persona is None:
            relay = next((r for r in rules if r.relay), None)
            if relay is None and account is not None and await self._inactive(account.id,
                                                                             portal.network):
                raise NotAllowedHere(
                    f"Your {portal.network} account is paused or needs attention, so this was "
                    f'not sent. See "personas" in your management room ("resume" to go on).')
            if relay is None:
                raise NotAllowedHere(
                    f"You have no {portal.network} account linked, so this was not sent. "
                    f"Link one in your management room: link {portal.network} ADDRESS")
            owner_personas = await self._personas(relay.account_id, portal.network)
            persona = next((p for p in owner_personas if p.profile_id == relay.profile_id),
                           None)
            if persona is None:
                raise NotAllowedHere("The relay for this room is not available right now.")
            relayed_for = sender
        if self.capabilities is not None:  # what the person allows, within the policy
            refusal = await self.capabilities.refusal(persona, portal.network, portal.remote_id,
                                                      action, relayed=relayed_for is not None)
            if refusal is not None:
                raise NotAllowedHere(refusal)
        profile = await self.storage.db.fetchrow(
            "SELECT account_id FROM profile WHERE id=$1", persona.profile_id)
        token = self.minter.mint(persona=persona.id, profile=persona.profile_id,
                                 account=profile["account_id"], action=action,
                                 target=Target(portal.network, portal.remote_id))
        return Acting(token, persona, relayed_for)
