"""Mapping rules and capabilities per profile: list, add and remove, through the same code as
the bot's `map`/`rules`/`unmap` and `allow`/`deny`/`capabilities` (core.mapping,
security.capabilities): the same checks and the same refusals."""

from __future__ import annotations

from html import escape

from aiohttp import web

from .. import words
from ..core.mapping import RuleRefused
from ..db.capability import CapabilityRule
from ..db.mapping_rule import MappingRule
from ..db.profile import Profile
from ..security.capabilities import ALL_ACTIONS, CapabilityRefused, Scope
from .portal_look import checkbox, confirm_body, field, hidden, link_button, select
from .portal_routes import Me, PortalCore, Refused

RULES = "/account/rules"


def _remove(href: str, rule_id: str) -> str:
    return link_button(href, "Remove", element_id=f"remove-{rule_id}")


def _rules_table(rules: list[MappingRule]) -> str:
    if not rules:
        return f"<p>{escape(words.NO_RULES)}</p>"
    rows = "".join(
        f'<tr id="rule-{r.id}"><td data-label="Network">{escape(r.network)}</td>'
        f'<td data-label="Room"><span class="mono">{escape(r.remote)}</span></td>'
        f'<td data-label="Options">{escape(_options(r)) or "none"}</td>'
        f'<td data-label="Rule"><span class="mono">{escape(r.id)}</span></td>'
        f'<td data-label="Actions">{_remove(f"{RULES}/{r.id}/remove", r.id)}'
        "</td></tr>" for r in rules)
    return ('<table class="stack"><thead><tr><th scope="col">Network</th><th scope="col">Room'
            '</th><th scope="col">Options</th><th scope="col">Rule</th><th scope="col">Actions'
            f"</th></tr></thead><tbody>{rows}</tbody></table>")


def _options(rule: MappingRule) -> str:
    return ", ".join(x for x, on in (("inbound only", rule.inbound_only),
                                     ("relay", rule.relay),
                                     (f"into {rule.target_room}", bool(rule.target_room))) if on)


def _scope(rule: CapabilityRule) -> str:
    return str(Scope(rule.network, rule.workspace, rule.channel))


def _capabilities_table(rules: list[CapabilityRule]) -> str:
    if not rules:
        return "<p>Everything the bridge's policy allows.</p>"
    rows = "".join(
        f'<tr id="cap-{r.id}"><td data-label="Effect">{escape(r.effect)}</td>'
        f'<td data-label="Actions">{escape(", ".join(r.actions))}</td>'
        f'<td data-label="On"><span class="mono">{escape(_scope(r))}</span></td>'
        f'<td data-label="Actions">{_remove(f"/account/capabilities/{r.id}/remove", r.id)}'
        "</td></tr>" for r in rules)
    return ('<table class="stack"><thead><tr><th scope="col">Effect</th><th scope="col">'
            'What</th><th scope="col">On</th><th scope="col">Actions</th></tr></thead>'
            f"<tbody>{rows}</tbody></table>")


def _profile_card(profile: Profile, rules: list[MappingRule], caps: list[CapabilityRule],
                  networks: list[str], csrf: str) -> str:
    choices = [(n, n) for n in networks]
    pid = profile.id
    return f"""<section class="card" id="rules-{pid}" aria-labelledby="rules-name-{pid}">
<h2 id="rules-name-{pid}">{escape(profile.name)}</h2>
<h3>{words.MAPPING_RULES}</h3>{_rules_table(rules)}
<details id="add-rule-{pid}"><summary>Map a room into {escape(profile.name)}</summary>
<form method="post" action="{RULES}">{hidden(csrf=csrf, profile=pid)}
{select("Network", "network", choices, element_id=f"rule-network-{pid}")}
{field("Room on the network", "remote", element_id=f"rule-remote-{pid}",
       hint="Its address or name, e.g. team@conference.example.org; * patterns map rooms "
            "you are invited to.")}
{field("Matrix room to bridge into (optional)", "room", required=False,
       element_id=f"rule-room-{pid}", hint="A room you are in and may change (!id:server).")}
{checkbox("Inbound only (nothing is sent from Matrix)", "inbound_only", f"rule-in-{pid}")}
{checkbox("Relay (others in the Matrix room send through your account)", "relay",
          f"rule-relay-{pid}")}
<button type="submit" id="add-rule-submit-{pid}">Map the room</button></form></details>
<h3>{words.CAPABILITIES}</h3>{_capabilities_table(caps)}
<details id="add-cap-{pid}"><summary>Allow or deny something</summary>
<form method="post" action="/account/capabilities">{hidden(csrf=csrf, profile=pid)}
{select("Allow or deny", "effect", [("allow", "allow"), ("deny", "deny")],
        element_id=f"cap-effect-{pid}")}
{field("Actions", "actions", element_id=f"cap-actions-{pid}",
       hint=f"all, or some of {', '.join(ALL_ACTIONS)}, comma-separated.")}
{field("On", "scope", element_id=f"cap-scope-{pid}",
       hint="NETWORK[/WORKSPACE[/CHANNEL]], e.g. xmpp/*/team*@conference.example.org")}
<button type="submit" id="add-cap-submit-{pid}">Save</button></form></details></section>"""


class PortalRules:
    def __init__(self, core: PortalCore) -> None:
        self.core = core

    def register(self, app: web.Application) -> None:
        page, r = self.core.page, app.router
        r.add_get(RULES, page("rules", self.list_rules))
        r.add_post(RULES, page("map", self.add_rule))
        r.add_get(RULES + "/{rule_id}/remove", page("rules", self.ask_remove_rule))
        r.add_post(RULES + "/{rule_id}/remove", page("rules", self.remove_rule))
        r.add_post("/account/capabilities", page("account", self.add_capability))
        r.add_get("/account/capabilities/{rule_id}/remove",
                  page("account", self.ask_remove_capability))
        r.add_post("/account/capabilities/{rule_id}/remove",
                   page("account", self.remove_capability))

    async def list_rules(self, request: web.Request, me: Me, _: dict[str, str]
                         ) -> web.Response:
        linking, _rules = self.core.ready()
        storage = self.core.storage
        rules = await storage.rules.for_account(me.account_id)
        caps = await storage.capabilities.for_account(me.account_id)
        cards = "".join(
            _profile_card(p, [r for r in rules if r.profile_id == p.id],
                          [c for c in caps if c.profile_id == p.id], list(linking.networks()),
                          me.viewer.csrf)
            for p in await storage.profiles.for_account(me.account_id))
        body = (f"<h1>{words.MAPPING_RULES} and {words.CAPABILITIES.lower()}</h1><p>Which "
                "remote rooms are bridged into each profile, and what RelayForge may do as "
                f"you there.</p>{cards}")
        return self.core.render(request, me, words.MAPPING_RULES, body, RULES)

    async def add_rule(self, request: web.Request, me: Me, form: dict[str, str]
                       ) -> web.StreamResponse:
        _, rules = self.core.ready()
        profile = await self.core.profile_of(me, form.get("profile", ""))
        if me.mxid is None:
            raise Refused("Mapping a room needs a Matrix user on your account (its portal "
                          'room is yours): send "login-link" to the bot from it.', 400)
        remote = form.get("remote", "").strip()
        if not remote:
            raise Refused("Name the room on the network to map.", 400)
        try:
            rule = await rules.add(me.account_id, me.mxid, profile.name,
                                   form.get("network", "").lower(), remote,
                                   target_room=form.get("room", "").strip() or None,
                                   inbound_only=form.get("inbound_only") == "1",
                                   relay=form.get("relay") == "1")
        except RuleRefused as e:
            raise Refused(str(e), 400) from e
        portal = None if "*" in rule.remote else await self.core.storage.portals.get(
            rule.network, rule.remote)
        raise self.core.done(RULES, words.rule_mapped(
            rule.network, rule.remote, profile.name, portal.mxid if portal else "its room",
            rule.id))

    async def _rule(self, me: Me, rule_id: str) -> MappingRule:
        for rule in await self.core.storage.rules.for_account(me.account_id):
            if rule.id == rule_id:
                return rule
        raise Refused(f'You have no rule "{rule_id}". See "rules".', 404)

    async def ask_remove_rule(self, request: web.Request, me: Me, _: dict[str, str]
                              ) -> web.Response:
        rule = await self._rule(me, request.match_info["rule_id"])
        return self.core.render(request, me, "Remove a mapping rule", confirm_body(
            f"Remove the rule for {rule.network} {rule.remote}?",
            "Messages of that room stop being bridged; the Matrix room stays.",
            request.path, "Remove the rule", me.viewer.csrf, RULES, danger=True))

    async def remove_rule(self, request: web.Request, me: Me, _: dict[str, str]
                          ) -> web.StreamResponse:
        _, rules = self.core.ready()
        rule = await self._rule(me, request.match_info["rule_id"])
        try:
            await rules.remove(me.account_id, rule.id, me.actor)
        except RuleRefused as e:
            raise Refused(str(e), 404) from e
        raise self.core.done(RULES, words.rule_removed(rule.network, rule.remote))

    async def add_capability(self, request: web.Request, me: Me, form: dict[str, str]
                             ) -> web.StreamResponse:
        capabilities = self._capabilities()
        profile = await self.core.profile_of(me, form.get("profile", ""))
        effect = form.get("effect", "")
        try:
            rule = await capabilities.change(me.account_id, me.actor, effect, profile.name,
                                             form.get("actions", ""), form.get("scope", ""))
        except CapabilityRefused as e:
            raise Refused(str(e), 400) from e
        raise self.core.done(RULES, words.capability_changed(
            effect, rule.actions, profile.name, form.get("scope", ""), rule.id))

    def _capabilities(self):
        if self.core.capabilities is None:
            raise Refused("The bridge is starting; try again in a minute.", 503)
        return self.core.capabilities

    async def _capability(self, me: Me, rule_id: str) -> CapabilityRule:
        for rule in await self.core.storage.capabilities.for_account(me.account_id):
            if rule.id == rule_id:
                return rule
        raise Refused(f'You have no capability rule "{rule_id}"; see "capabilities".', 404)

    async def ask_remove_capability(self, request: web.Request, me: Me, _: dict[str, str]
                                    ) -> web.Response:
        rule = await self._capability(me, request.match_info["rule_id"])
        return self.core.render(request, me, "Remove a capability rule", confirm_body(
            f"Remove {rule.id} ({rule.effect} {', '.join(rule.actions)} on {_scope(rule)})?",
            "What the bridge may do as you is then decided without it.", request.path,
            "Remove the rule", me.viewer.csrf, RULES, danger=True))

    async def remove_capability(self, request: web.Request, me: Me, _: dict[str, str]
                                ) -> web.StreamResponse:
        rule = await self._capability(me, request.match_info["rule_id"])
        try:
            await self._capabilities().remove(me.account_id, me.actor, rule.id)
        except CapabilityRefused as e:
            raise Refused(str(e), 404) from e
        raise self.core.done(RULES, words.capability_removed(rule.id))
