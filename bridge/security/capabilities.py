"""What each person allows the bridge to do as them: capabilities per profile (or persona).

A rule allows or denies some actions on a network, in workspaces (Slack teams, Discord
servers, XMPP services) and channels matching fnmatch patterns. A deny wins over an allow. Once
a profile allows anything on a network, only what it allows is done there; a profile that
allowed nothing on a network gets whatever the admin's policy allows, so nothing changes for
people who never set capabilities. Nobody can allow what the policy forbids, and the policy is
checked first at send time anyway.
"""

from __future__ import annotations

import fnmatch
import re
import secrets
from collections.abc import Callable

import attrs

from ..audit import AuditEvent, AuditLog
from ..db import Storage
from ..db.capability import CapabilityRule
from ..db.persona import Persona
from .policy import ALL_ACTIONS, Policy

EFFECTS = ("allow", "deny")
USAGE = ("allow|deny PROFILE ACTIONS on NETWORK[/WORKSPACE[/CHANNEL]] [--persona PLATFORM:ID]"
         " [--agent NAME]"
         f" (ACTIONS: all or some of {', '.join(ALL_ACTIONS)}, comma-separated)")
# (network, channel) -> the channel's workspace on that network ("" when it has none).
WorkspaceOf = Callable[[str, str], str]


class CapabilityRefused(Exception):
    """The change cannot be made; the message says why."""


@attrs.frozen
class Scope:
    network: str
    workspace: str = "*"
    channel: str = "*"

    @classmethod
    def parse(cls, text: str) -> Scope:
        """NETWORK, NETWORK/WORKSPACE or NETWORK/WORKSPACE/CHANNEL; the channel part may
        itself contain slashes."""
        parts = text.split("/", 2)
        if not parts[0] or any(not p for p in parts[1:]):
            raise CapabilityRefused(f'"{text}" is not NETWORK[/WORKSPACE[/CHANNEL]]; use * '
                                    "for any workspace, e.g. xmpp/*/team*@conference.example.org")
        return cls(parts[0].lower(), *parts[1:])

    def __str__(self) -> str:
        if self.channel != "*":
            return f"{self.network}/{self.workspace}/{self.channel}"
        return self.network if self.workspace == "*" else f"{self.network}/{self.workspace}"


def parse_actions(text: str, allowed: list[str]) -> list[str]:
    """Action names from "send,react" (or "all": every action the policy allows there)."""
    names = [n for n in re.split(r"[,\s]+", text.lower()) if n]
    if names == ["all"]:
        return list(allowed)
    unknown = [n for n in names if n not in ALL_ACTIONS]
    if unknown or not names:
        raise CapabilityRefused(f'Unknown action "{(unknown or [text])[0]}"; actions are all '
                                f"or some of {', '.join(ALL_ACTIONS)}.")
    return [a for a in ALL_ACTIONS if a in names]


class Capabilities:
    def __init__(self, storage: Storage, audit: AuditLog, policy: Policy,
                 workspace_of: WorkspaceOf | None = None,
                 networks: Callable[[], list[str]] | None = None) -> None:
        self.storage = storage
        self.audit = audit
        self.policy = policy
        self.workspace_of = workspace_of or (lambda network, channel: "")
        self.networks = networks or (lambda: [])

    # ---- the check at send time ------------------------------------------------------------

    async def refusal(self, persona: Persona, network: str, channel: str, action: str, *,
                      relayed: bool = False, agent: str | None = None) -> str | None:
        """Why the persona's owner does not allow this action here, or None when they do.
        `agent`: the name of the person's agent acting; rules naming it narrow what the
        person's own rules allow, never widen it."""
        rules = [r for r in await self.storage.capabilities.for_profile_network(
            persona.profile_id, network) if r.persona_id in (None, persona.id)]
        workspace = self.workspace_of(network, channel)
        own = [r for r in rules if r.agent is None]
        agents = [r for r in rules if agent is not None and r.agent is not None
                  and r.agent.lower() == agent.lower()]
        if _allows(own, action, workspace, channel) and _allows(agents, action, workspace,
                                                                channel):
            return None
        if agent is not None and _allows(own, action, workspace, channel):
            return (f"Your capabilities do not allow your agent {agent} to {action} in "
                    f"{channel} on {network}, so this was not sent. See \"capabilities\" in "
                    "your management room.")
        if relayed:
            return (f"The account relaying this room does not allow {action} in {channel} on "
                    f"{network}, so this was not sent.")
        profile = await self.storage.profiles.name_of(persona.profile_id)
        return (f"Your capabilities for {profile} do not allow {action} in {channel} on "
                f"{network}, so this was not sent. See \"capabilities\" in your management "
                "room.")

    # ---- changes ---------------------------------------------------------------------------

    async def change(self, account_id: str, actor: str, effect: str, profile_name: str,
                     actions_text: str, scope_text: str, persona: Persona | None = None,
                     agent: str | None = None) -> CapabilityRule:
        if effect not in EFFECTS:
            raise CapabilityRefused(f"Usage: {USAGE}")
        profile = await self.storage.profiles.by_name(account_id, profile_name)
        if profile is None:
            raise CapabilityRefused(f'You have no profile called "{profile_name}".')
        scope = Scope.parse(scope_text)
        running = self.networks()
        if scope.network not in running:
            raise CapabilityRefused(f'"{scope.network}" is not a network this bridge runs '
                                    f"(running: {', '.join(running) or 'none'}).")
        if persona is not None and (persona.profile_id != profile.id
                                    or persona.platform != scope.network):
            raise CapabilityRefused(f"{persona.platform}:{persona.external_user_id} is not a "
                                    f"{scope.network} account of {profile.name}.")
        actions = parse_actions(actions_text, self.policy.allowed_actions(scope.network))
        if effect == "allow":
            refused = self.policy.grant_refusal(scope.network, scope.channel, actions)
            if refused is not None:
                raise CapabilityRefused(refused)
        if not actions:
            raise CapabilityRefused(f"The bridge's policy allows nothing on {scope.network}.")
        rule = CapabilityRule(f"cap_{secrets.token_hex(4)}", account_id, profile.id,
                              persona.id if persona else None, effect, tuple(actions),
                              scope.network, scope.workspace, scope.channel, agent=agent)
        await self.storage.capabilities.add(rule)
        await self.audit.append(AuditEvent.CAPABILITY, actor=actor, account=account_id,
                                profile=profile.id, persona=rule.persona_id,
                                details={"change": effect, "rule": rule.id,
                                         "actions": ",".join(actions), "scope": str(scope),
                                         **({"agent": agent} if agent else {})})
        return rule

    async def remove(self, account_id: str, actor: str, rule_id: str) -> CapabilityRule:
        rule = await self.storage.capabilities.delete(account_id, rule_id)
        if rule is None:
            raise CapabilityRefused(f'You have no capability rule "{rule_id}"; see '
                                    '"capabilities".')
        await self.audit.append(AuditEvent.CAPABILITY, actor=actor, account=account_id,
                                profile=rule.profile_id, persona=rule.persona_id,
                                details={"change": "remove", "rule": rule.id,
                                         "actions": ",".join(rule.actions),
                                         "scope": str(_scope(rule))})
        return rule

    # ---- what the person reads -------------------------------------------------------------

    async def describe(self, account_id: str) -> str:
        rules = await self.storage.capabilities.for_account(account_id)
        personas = {}
        lines = ["What RelayForge may do as you:"]
        for profile in await self.storage.profiles.for_account(account_id):
            personas.update({p.id: f"{p.platform}:{p.external_user_id}"
                             for p in await self.storage.personas.for_profile(profile.id)})
            mine = [r for r in rules if r.profile_id == profile.id]
            if not mine:
                lines.append(f"{profile.name}: everything the bridge's policy allows")
                continue
            lines.append(f"{profile.name}:")
            for rule in mine:
                who = f" (only {personas.get(rule.persona_id, rule.persona_id)})" if (
                    rule.persona_id) else ""
                if rule.agent:
                    who += f" (agent {rule.agent} only)"
                lines.append(f"  {rule.id}: {rule.effect} {', '.join(rule.actions)} on "
                             f"{_scope(rule)}{who}")
            for network in sorted({r.network for r in mine if r.effect == "allow"}):
                lines.append(f"  on {network}: only what is allowed above")
        for network in self.networks():
            denied = self.policy.denied_channels(network)
            lines.append(f"The bridge's policy on {network}: "
                         f"{', '.join(self.policy.allowed_actions(network))}"
                         + (f"; never in {', '.join(denied)}" if denied else ""))
        lines.append(f"Change: {USAGE}. Remove a rule: capabilities remove ID.")
        return "\n".join(lines)


def _allows(rules: list[CapabilityRule], action: str, workspace: str, channel: str) -> bool:
    """A deny wins; once the rules allow anything on the network, only what they allow."""
    matching = [r for r in rules if action in r.actions
                and fnmatch.fnmatchcase(workspace, r.workspace)
                and fnmatch.fnmatchcase(channel, r.channel)]
    return not any(r.effect == "deny" for r in matching) and (
        any(r.effect == "allow" for r in matching)
        or not any(r.effect == "allow" for r in rules))


def _scope(rule: CapabilityRule) -> Scope:
    return Scope(rule.network, rule.workspace, rule.channel)
