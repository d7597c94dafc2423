"""Mapping rules: which remote rooms of a person's profile come into Matrix, and how."""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import attrs

from ..audit import AuditEvent, AuditLog
from ..db import Storage
from ..db.mapping_rule import MappingRule
from ..db.persona import Persona, PersonaStatus
from ..identity.accounts import new_id
from ..networks.base import Connector, RateLimited, RemoteInvite, RemoteRoom, Workspace
from ..networks.login import LoginFailed
from .backfill import Backfill
from .matrix_side import PortalDirectory
from .room_rights import RoomCheck, RoomNotYours, check_room_rights
from .worker_calls import CallFailed

log = logging.getLogger("relayforge.mapping")
# Joins of one room a network rate-limits before its rule is left inactive.
_JOIN_TRIES = 5
# How long a rule said to one worker may take on the worker serving its network (the join,
# with a rate-limited network's waits, and the portal made).
ELSEWHERE_SECONDS = _JOIN_TRIES * 60 + 120


class RuleRefused(Exception):
    """The rule cannot be made; the message says why. Nothing was stored."""


class TargetRoomRefused(RuleRefused):
    """The person may not map into the Matrix room they named (not joined, or without the
    power to change it)."""


class SpaceLinker(Protocol):
    async def add_to_space(self, space: str, room: str) -> None: ...

    async def profile_space(self, profile_id: str) -> str | None: ...

    async def workspace_space(self, profile_id: str, profile_space: str, network: str,
                              workspace: Workspace, invite: list[str]) -> str: ...


class MappingRules:
    def __init__(self, storage: Storage, audit: AuditLog, portals: PortalDirectory,
                 connectors: dict[str, Connector], spaces: SpaceLinker) -> None:
        self.storage = storage
        self.audit = audit
        self.portals = portals
        self.connectors = connectors
        # Data residency (bridge.compliance.residency), when on: a refusal of a network
        # workspace (network, workspace, what) and of an existing room's state.
        self.refuse_network: Callable[[str, str, str], str | None] | None = None
        self.refuse_room: RoomCheck | None = None
        self.spaces = spaces
        # Set by the app when history is read (core/backfill.py).
        self.backfill: Backfill | None = None
        # With several workers (core/workers.py): run a call ("rules.add") on the worker
        # serving a network, or None when that is this one. A rule's room is joined with its
        # persona's session, open on that worker only.
        self.elsewhere: Callable[[str, str, dict[str, Any]], Awaitable[dict[str, Any] | None]
                                 ] | None = None
        # With several workers: does this one serve the network's sessions (and so judge
        # its rules at start-up and after a resume)?
        self.serves: Callable[[str], bool] = lambda network: True

    async def persona_in(self, profile_id: str, network: str) -> Persona | None:
        for persona in await self.storage.personas.for_profile(profile_id):
            if persona.platform == network and persona.status == PersonaStatus.ACTIVE:
                return persona
        return None

    async def add(self, account_id: str, owner: str, profile_name: str, network: str,
                  remote: str, *, target_room: str | None = None, inbound_only: bool = False,
                  relay: bool = False, handed_here: bool = False) -> MappingRule:
        """`handed_here`: another worker handed the rule to this one (not handed on)."""
        connector = self.connectors.get(network)
        if connector is None:
            raise RuleRefused(f'"{network}" is not a network this bridge runs.')
        if self.refuse_network is not None and (refusal := self.refuse_network(
                network, connector.workspace_of(remote), remote)):
            raise RuleRefused(refusal)
        if "*" not in remote and self.elsewhere is not None and not handed_here:
            # The room is joined with the persona's session: on the worker serving the
            # network, which makes the same checks and the rule (as if it were said there).
            args = {"account": account_id, "owner": owner, "profile": profile_name,
                    "remote": remote, "target_room": target_room,
                    "inbound_only": inbound_only, "relay": relay}
            try:
                answer = await self.elsewhere(network, "rules.add", args)
            except CallFailed as e:
                raise RuleRefused(
                    f"The bridge worker serving {network} {e}. Send \"rules\" to see whether "
                    f"{remote} was mapped, and try again if not.") from e
            if answer is not None:
                return self._answered(answer)
        profile = await self.storage.profiles.by_name(account_id, profile_name)
        if profile is None:
            raise RuleRefused(f'You have no profile called "{profile_name}".')
        persona = await self.persona_in(profile.id, network)
        if persona is None:
            raise RuleRefused(f'Link a {network} account in the profile "{profile.name}" '
                              f'first: link {network} ADDRESS --profile "{profile.name}".')
        if target_room is not None:
            # Before anything is joined or stored: adopting a room the requester does not
            # control would bridge other people's words (as the requester, with --relay).
            try:
                target_room = await check_room_rights(self.portals.bot_intent, target_room,
                                                      owner, also=self.refuse_room)
            except RoomNotYours as e:
                raise TargetRoomRefused(str(e)) from e
        rule = MappingRule(new_id("rule"), account_id, profile.id, network, remote,
                           target_room, inbound_only, relay)
        if "*" not in remote:
            # A pattern rule waits for invites to rooms it covers (see handle_invite). A named
            # room is kept under the network's own id for it (a Slack "T1/#general" is
            # "T1/C123"), so renaming the channel does not break the rule.
            room = await self._activate(rule, persona, owner, stored=False)
            rule = attrs.evolve(rule, remote=room.remote_id)
        if not await self.storage.rules.add(rule):
            raise RuleRefused(f"{remote} is already mapped in that profile.")
        await self.audit.append(AuditEvent.ADMIN_ACTION, actor=owner, account=account_id,
                                profile=profile.id, persona=persona.id,
                                details={"what": "rule_added", "network": network,
                                         "remote": remote, "inbound_only": inbound_only,
                                         "relay": relay})
        return rule

    async def add_here(self, args: dict[str, Any]) -> dict[str, Any]:
        """`add` asked by another worker (this one serves the network): its answer."""
        try:
            rule = await self._add_here(args)
        except TargetRoomRefused as e:
            return {"refused": str(e), "target_room": True}
        except RuleRefused as e:
            return {"refused": str(e)}
        return {"rule": attrs.asdict(rule)}

    async def _add_here(self, args: dict[str, Any]) -> MappingRule:
        target_room = args.get("target_room")
        return await self.add(
            str(args["account"]), str(args["owner"]), str(args["profile"]),
            str(args["network"]), str(args["remote"]),
            target_room=str(target_room) if target_room is not None else None,
            inbound_only=bool(args.get("inbound_only")), relay=bool(args.get("relay")),
            handed_here=True)

    @staticmethod
    def _answered(answer: dict[str, Any]) -> MappingRule:
        if "rule" in answer:
            return MappingRule(**answer["rule"])
        if "refused" in answer:
            refused = TargetRoomRefused if answer.get("target_room") else RuleRefused
            raise refused(str(answer["refused"]))
        raise RuleRefused(f"The bridge worker serving that network "
                          f"{answer.get('failed', 'did not map it')}. Try again.")

    async def _activate(self, rule: MappingRule, persona: Persona, owner: str, *,
                        stored: bool = True) -> RemoteRoom:
        """Join the rule's room and make (or reuse) its portal; its history comes next. A
        `stored` rule names the room by its network id already; a new one may name it by
        what the person wrote ("#general"). A network that asks to slow down is waited
        for (a restart rejoins every room at once)."""
        for attempt in range(1, _JOIN_TRIES + 1):
            try:
                return await self._activate_once(rule, persona, owner, stored)
            except RateLimited as e:
                if attempt == _JOIN_TRIES:
                    raise RuleRefused(f"Could not join {rule.remote} on {rule.network}: {e}"
                                      ) from e
                log.info("Joining %s on %s: %s; trying again", rule.remote, rule.network, e)
                await asyncio.sleep(min(e.retry_after, 60))
        raise AssertionError("unreachable")

    async def _activate_once(self, rule: MappingRule, persona: Persona, owner: str,
                             stored: bool) -> RemoteRoom:
        connector = self.connectors[rule.network]
        # A network that reads history is caught up by the core's backfill, not by `join`.
        backfill = self.backfill if self.backfill is not None and \
            self.backfill.reads_history(rule.network) else None
        since = await self.storage.messages.latest_timestamp(rule.network, rule.remote)
        # The network may report the room's live events as soon as it is joined: held
        # from before the join, so none lands before (or among) the history.
        async with (backfill.joining(rule.network, rule.remote if stored else None)
                    if backfill is not None else contextlib.nullcontext()) as hold:
            try:
                room = await connector.join(persona.id, rule.remote,
                                            since_ms=since - 5000 if since and not backfill
                                            else None)
            except (LoginFailed, TimeoutError, NotImplementedError) as e:
                raise RuleRefused(f"Could not join {rule.remote} on {rule.network}: {e}"
                                  ) from e
            if rule.target_room:
                portal = await self.portals.adopt(rule.network, room, rule.target_room,
                                                  rule_id=rule.id)
            else:
                portal = await self.portals.ensure(rule.network, room, owner, rule_id=rule.id)
            if backfill is not None and portal.mxid:
                await backfill.portal_ready(rule.network, room, persona.id, hold)
        profile = next(p for p in await self.storage.profiles.for_account(rule.account_id)
                       if p.id == rule.profile_id)
        # A new account's space is made after its first answer: if still owed, made now.
        space = profile.space_mxid or await self.spaces.profile_space(profile.id)
        if space and portal.mxid:
            if room.workspace is not None:
                # A Discord server's channels go in its own sub-space of the profile's space.
                owners = await self.storage.accounts.matrix_users(rule.account_id)
                space = await self.spaces.workspace_space(profile.id, space, rule.network,
                                                          room.workspace, owners or [owner])
            await self.spaces.add_to_space(space, portal.mxid)
        return room

    async def handle_invite(self, network: str, invite: RemoteInvite) -> None:
        """An invite to a room that a pattern rule of the person's profile covers (say
        `*@conference.example.org`) maps that room like an explicit rule would."""
        persona = await self.storage.personas.get(invite.persona_id or "")
        if persona is None:
            return
        room = invite.room.remote_id
        for rule in await self.storage.rules.for_profile_network(persona.profile_id, network):
            if "*" not in rule.remote or not fnmatch.fnmatchcase(room, rule.remote):
                continue
            owner = invite.receiver or ""
            profile = next(p for p in await self.storage.profiles.for_account(rule.account_id)
                           if p.id == rule.profile_id)
            try:
                await self.add(rule.account_id, owner, profile.name, network, room,
                               inbound_only=rule.inbound_only, relay=rule.relay)
            except RuleRefused as e:
                log.info("Invite to %s not mapped: %s", room, e)
            return

    async def activate_all(self, persona: Persona | None = None) -> None:
        """After a restart (or a resume): rejoin the mapped rooms with their persona's
        session; only those of `persona` when given. With several workers, only the worker
        serving a network rejoins (and judges) its rules: the others have no session there."""
        everything = persona is None
        rules = (await self.storage.rules.for_profile_network(persona.profile_id,
                                                              persona.platform)
                 if persona else await self.storage.rules.all())
        rejoined, inactive, elsewhere = 0, 0, set()
        for rule in rules:
            if "*" in rule.remote:
                continue  # a pattern waits for invites
            if not self.serves(rule.network):
                elsewhere.add(rule.network)  # the worker serving it judges it
                continue
            persona = await self.persona_in(rule.profile_id, rule.network)
            owners = await self.storage.accounts.matrix_users(rule.account_id)
            if persona is None or rule.network not in self.connectors or not owners:
                continue
            try:
                await self._activate(rule, persona, owners[0])
                rejoined += 1
            except RuleRefused as e:
                inactive += 1
                log.warning("Rule %s not active: %s", rule.id, e)
            except Exception:
                # A network failing one room (an error answer, a dropped connection) must
                # not leave the rooms after it, and the backfills to resume, unactivated.
                inactive += 1
                log.exception("Rule %s not active: rejoining %s failed", rule.id, rule.remote)
        if everything:
            log.info("Mapped rooms rejoined: %d, not active: %d%s", rejoined, inactive,
                     f" (rules on {', '.join(sorted(elsewhere))} are left to the worker "
                     "serving that network)" if elsewhere else "")

    async def remove(self, account_id: str, rule_id: str, actor: str) -> MappingRule:
        rule = next((r for r in await self.storage.rules.for_account(account_id)
                     if r.id == rule_id), None)
        if rule is None:
            raise RuleRefused(f'You have no rule "{rule_id}". See "rules".')
        await self.storage.rules.delete(rule_id)
        await self.audit.append(AuditEvent.ADMIN_ACTION, actor=actor, account=account_id,
                                details={"what": "rule_removed", "remote": rule.remote})
        return rule
