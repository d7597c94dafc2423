"""Provisioning endpoints for linking, personas and mapping rules (the bot's flows, as an API).

Mixed into `ProvisioningApi`, which authenticates every request, checks the acting Matrix
user's permission level, and sets `request[ACCOUNT]` and `request[ACTING_USER]`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..core.linking import LinkDone, LinkRefused
from ..core.mapping import RuleRefused, TargetRoomRefused
from ..db.mapping_rule import MappingRule
from ..db.persona import Persona
from ..identity.errors import IdentityError
from ..networks.login import LoginStep
from .requests import BadRequest, json_object

if TYPE_CHECKING:
    from ..core.linking import Linking
    from ..core.mapping import MappingRules
    from ..identity.accounts import Accounts

ACCOUNT = web.RequestKey("account", str)
# The Matrix user the request acts as (the audit actor, the one whose room rights count).
ACTING_USER = web.RequestKey("acting_user", str)


def _error(status: int, errcode: str, message: str) -> web.Response:
    return web.json_response({"errcode": errcode, "error": message}, status=status)


def step_json(flow_id: str, step: LoginStep) -> dict[str, Any]:
    return {"done": False, "flow_id": flow_id, "message": step.message,
            "fields": [{"name": f.name, "label": f.label, "secret": f.secret}
                       for f in step.fields],
            "url": step.url, "qr": step.qr}


def persona_json(persona: Persona, profile: str) -> dict[str, Any]:
    return {"id": persona.id, "profile": profile, "status": persona.status.value,
            "descriptor": persona.descriptor()}


def rule_json(rule: MappingRule, profile: str) -> dict[str, Any]:
    return {"id": rule.id, "profile": profile, "network": rule.network, "remote": rule.remote,
            "target_room": rule.target_room, "inbound_only": rule.inbound_only,
            "relay": rule.relay}


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object, through the one parsing layer (BadRequest otherwise)."""
    return await json_object(request)


def optional_text(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise BadRequest(400, "M_BAD_JSON", f"{key} must be a string.")
    return value


class NetworkEndpoints:
    accounts: Accounts
    linking: Linking | None
    rules: MappingRules | None

    async def _profiles(self, account_id: str) -> dict[str, str]:
        view = await self.accounts.view(account_id)
        return {p.profile.id: p.profile.name for p in view.profiles}

    async def networks(self, request: web.Request) -> web.Response:
        assert self.linking is not None
        return web.json_response({"networks": [
            {"name": name, "login_flows": flows}
            for name, flows in self.linking.networks().items()]})

    async def link_start(self, request: web.Request) -> web.Response:
        assert self.linking is not None
        body = await json_body(request)
        identifier = optional_text(body, "identifier")
        account = request[ACCOUNT]
        profile = optional_text(body, "profile") or next(
            iter((await self._profiles(account)).values()))
        try:
            flow_id, step = await self.linking.start(
                account, request.match_info["network"], identifier, profile)
        except LinkRefused as e:
            return _error(400, "M_INVALID_PARAM", str(e))
        return web.json_response(step_json(flow_id, step))

    async def link_step(self, request: web.Request) -> web.Response:
        assert self.linking is not None
        body = await json_body(request)
        answers = body.get("answers")
        if not isinstance(answers, dict) or not all(
                isinstance(v, str) for v in answers.values()):
            return _error(400, "M_BAD_JSON", 'expected {"answers": {"field": "value"}}')
        account = request[ACCOUNT]
        try:
            result = await self.linking.submit(account, request.match_info["flow_id"],
                                               answers, actor=request[ACTING_USER])
        except LinkRefused as e:
            return _error(400, "M_FORBIDDEN", str(e))
        if isinstance(result, LinkDone):
            profiles = await self._profiles(account)
            return web.json_response({
                "done": True, "verified": result.verified,
                "persona": persona_json(result.persona,
                                        profiles.get(result.persona.profile_id, ""))})
        flow_id, step = result
        return web.json_response(step_json(flow_id, step))

    async def link_after_oauth(self, request: web.Request) -> web.Response:
        assert self.linking is not None
        found = await self.linking.after_oauth(request[ACCOUNT], request.match_info["flow_id"])
        if found is None:
            return _error(404, "M_NOT_FOUND", "Nothing yet: open the step's URL and allow "
                          "the bridge there first.")
        return web.json_response(step_json(*found))

    async def personas(self, request: web.Request) -> web.Response:
        view = await self.accounts.view(request[ACCOUNT])
        return web.json_response({"personas": [
            persona_json(x, p.profile.name) for p in view.profiles for x in p.personas]})

    async def unlink(self, request: web.Request) -> web.Response:
        account = request[ACCOUNT]
        try:
            persona = await self.accounts.unlink_persona(
                account, request.match_info["persona_id"], actor=request[ACTING_USER])
        except IdentityError as e:
            return _error(404, "M_NOT_FOUND", str(e))
        return web.json_response({"unlinked": persona.id})

    async def persona_state(self, request: web.Request) -> web.Response:
        account = request[ACCOUNT]
        action = request.match_info["action"]
        if action not in ("pause", "resume", "revoke"):
            return _error(404, "M_NOT_FOUND", f"unknown action {action}")
        try:
            persona = await self.accounts.set_persona_state(
                account, request.match_info["persona_id"], action,
                actor=request[ACTING_USER])
        except IdentityError as e:
            return _error(400, "M_FORBIDDEN", str(e))
        profiles = await self._profiles(account)
        return web.json_response(persona_json(persona, profiles.get(persona.profile_id, "")))

    async def list_rules(self, request: web.Request) -> web.Response:
        account = request[ACCOUNT]
        profiles = await self._profiles(account)
        rules = await self.accounts.storage.rules.for_account(account)
        return web.json_response({"rules": [rule_json(r, profiles.get(r.profile_id, ""))
                                            for r in rules]})

    async def add_rule(self, request: web.Request) -> web.Response:
        assert self.rules is not None
        body = await json_body(request)
        if not isinstance(body.get("network"), str) or not isinstance(body.get("remote"), str):
            return _error(400, "M_BAD_JSON", 'expected {"network": ..., "remote": ...}')
        target_room = body.get("target_room")
        if target_room is not None and not isinstance(target_room, str):
            return _error(400, "M_BAD_JSON", "target_room must be a room ID or alias")
        account = request[ACCOUNT]
        profiles = await self._profiles(account)
        profile = optional_text(body, "profile") or next(iter(profiles.values()))
        try:
            rule = await self.rules.add(
                account, request[ACTING_USER], profile, body["network"], body["remote"],
                target_room=target_room,
                inbound_only=body.get("inbound_only") is True, relay=body.get("relay") is True)
        except TargetRoomRefused as e:
            return _error(403, "M_FORBIDDEN", str(e))
        except RuleRefused as e:
            return _error(400, "M_INVALID_PARAM", str(e))
        return web.json_response(rule_json(rule, profile), status=201)

    async def remove_rule(self, request: web.Request) -> web.Response:
        assert self.rules is not None
        account = request[ACCOUNT]
        try:
            rule = await self.rules.remove(account, request.match_info["rule_id"],
                                           request[ACTING_USER])
        except RuleRefused as e:
            return _error(404, "M_NOT_FOUND", str(e))
        return web.json_response({"removed": rule.id})
