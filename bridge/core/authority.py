"""Who acts on the remote side when a Matrix user writes in a portal, and with what token.

The sender's own persona on that network acts, with a fresh impersonation token for exactly
this action in exactly this room. Which persona is never a guess: a direct chat is answered by
the persona whose conversation it is (the portal's receiver); in a shared room by the persona
of the sender's rule mapping it (the portal's own rule first), or the sender's only account on
that network. When two of the sender's accounts could write and nothing says which, nothing is
sent and the sender is told how to choose. Without a persona, a rule in relay mode lets the
rule owner's persona carry the message ("Name: message"); otherwise the person is told how
to link.
"""

from __future__ import annotations

import attrs

from ..db import Portal, Storage
from ..db.mapping_rule import MappingRule
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
class AgentActor:
    """A person's AI agent asking for an act (through the MCP endpoint): it gets at most what
    the person could do, within what the person granted it on the consent page."""
    grant_id: str
    name: str
    account_id: str
    actions: frozenset[str]
    profile_ids: frozenset[str]
    networks: frozenset[str]
    active: bool = True


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
        return await self.storage.personas.of_account(account_id, network,
                                                      [PersonaStatus.ACTIVE])

    async def _inactive(self, account_id: str, network: str) -> bool:
        return bool(await self.storage.personas.of_account(
            account_id, network, [s for s in PersonaStatus if s != PersonaStatus.ACTIVE]))

    async def _raise_if_waiting(self, account_id: str, network: str) -> None:
        waiting = await self.storage.personas.of_account(account_id, network, _WAITING)
        if waiting:
            raise NeedsRelink(waiting[0])

    async def _own_persona(self, account_id: str, portal: Portal, rules: list[MappingRule]
                           ) -> Persona | None:
        """The sender's persona that can see this portal's conversation, or None when they
        have none there; raises when it is another's direct chat or when it is ambiguous."""
        if portal.receiver is not None:
            return await self._receiver(account_id, portal)
        personas = await self._personas(account_id, portal.network)
        mine = [r for r in rules if r.account_id == account_id]
        if not mine:
            candidates = personas
        else:
            # The persona of each of the sender's rules: the profile's first active one,
            # as the mapping joins the room with (MappingRules.persona_in).
            by_rule = {r.id: p for r in mine
                       if (p := next((p for p in personas if p.profile_id == r.profile_id),
                                     None)) is not None}
            if portal.rule_id in by_rule:
                return by_rule[portal.rule_id]
            candidates = list({p.id: p for p in by_rule.values()}.values())
        if len(candidates) > 1:
            raise await self._ambiguous(account_id, portal, candidates, bool(mine))
        return candidates[0] if candidates else None

    async def _receiver(self, account_id: str, portal: Portal) -> Persona:
        """A direct chat: only the persona whose conversation it is may answer, as itself."""
        persona = await self.storage.personas.get(portal.receiver or "")
        owner = persona and await self.storage.profiles.account_of(persona.profile_id)
        if persona is None:
            raise NotAllowedHere(f"The {portal.network} account this direct chat belongs to is "
                                 "no longer linked, so this was not sent.")
        ref = f"{persona.platform}:{persona.external_user_id}"
        if owner != account_id:
            raise NotAllowedHere(f"This is the direct chat of {ref}, which is not yours: "
                                 "only its owner can write here, so this was not sent.")
        if persona.status in _WAITING:
            raise NeedsRelink(persona)
        if persona.status != PersonaStatus.ACTIVE:
            raise NotAllowedHere(
                f"This direct chat belongs to {ref}, which is paused, so this was not sent. "
                f'Send "resume {ref}" in your management room to go on.')
        return persona

    async def _ambiguous(self, account_id: str, portal: Portal, candidates: list[Persona],
                         has_rules: bool) -> NotAllowedHere:
        names = {p.id: p.name for p in await self.storage.profiles.for_account(account_id)}
        which = ", ".join(f"{p.external_user_id} ({names.get(p.profile_id, '?')})"
                          for p in candidates)
        remedy = (f'Keep the rule of only one profile for {portal.remote_id} ("rules", then '
                  '"unmap RULE")' if has_rules else
                  f"Map the room in the profile that should write here: map {portal.network} "
                  f"{portal.remote_id} --profile NAME")
        return NotAllowedHere(f"Several of your {portal.network} accounts can write here "
                              f"({which}) and nothing says which one should, so this was not "
                              f"sent. {remedy}.")

    async def act(self, sender: str, portal: Portal, action: Action,
                  agent: AgentActor | None = None) -> Acting:
        refusal = self.policy.refusal(portal.network, portal.remote_id, action)
        if refusal is not None:
            raise NotAllowedHere(refusal)
        if agent is not None:
            _check_agent_grant(agent, portal, action)
        rules = await self.storage.rules.for_remote(portal.network, portal.remote_id)
        if rules and all(r.inbound_only for r in rules):
            raise NotAllowedHere("This room is bridged inbound only: messages written here "
                                 f"are not sent to {portal.network}.")
        account = await self.storage.accounts.by_mxid(sender)
        persona = None
        if account is not None:
            persona = await self._own_persona(account.id, portal, rules)
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
        if agent is not None:
            await self._check_agent_persona(agent, persona, relayed_for)
        if self.capabilities is not None:  # what the person allows, within the policy
            refusal = await self.capabilities.refusal(persona, portal.network, portal.remote_id,
                                                      action, relayed=relayed_for is not None,
                                                      agent=agent.name if agent else None)
            if refusal is not None:
                raise NotAllowedHere(refusal)
        account = await self.storage.profiles.account_of(persona.profile_id)
        assert account is not None  # a persona's profile belongs to an account
        token = self.minter.mint(persona=persona.id, profile=persona.profile_id,
                                 account=account, action=action,
                                 target=Target(portal.network, portal.remote_id),
                                 agent=agent.name if agent else None)
        return Acting(token, persona, relayed_for)

    async def _check_agent_persona(self, agent: AgentActor, persona: Persona,
                                   relayed_for: str | None) -> None:
        if relayed_for is not None:
            raise NotAllowedHere(f"Your agent {agent.name} acts only as your own accounts, and "
                                 "you have none here (this room relays), so this was not sent.")
        if persona.profile_id not in agent.profile_ids:
            profile = await self.storage.profiles.name_of(persona.profile_id)
            raise NotAllowedHere(
                f"Your agent {agent.name} was not granted the profile {profile}, which writes "
                "here, so this was not sent. Authorise it again to grant that profile.")


def _check_agent_grant(agent: AgentActor, portal: Portal, action: Action) -> None:
    """What the consent page granted, checked before anything else the agent asks."""
    if not agent.active:
        raise NotAllowedHere(f"Your agent {agent.name} was revoked, so this was not sent.")
    if Action(action).value not in agent.actions:
        raise NotAllowedHere(f"Your agent {agent.name} was not granted {Action(action).value}, "
                             "so this was not sent.")
    if portal.network not in agent.networks:
        raise NotAllowedHere(f"Your agent {agent.name} was not granted {portal.network}, so "
                             "this was not sent.")
