"""Linking a network account from the browser: the same flow as the bot's `link`
(core.linking), step by step in the page.

Password and code networks ask in the page (a secret field is never filled in again or shown);
MFA is asked when the policy calls the account high-risk; the bridge's consent text is shown
before the account is recorded, and nothing is linked without "yes". OAuth networks go
through the bridge's own start page (/link/{network}/start), which binds the flow to this
browser before sending it to the network.
"""

from __future__ import annotations

import base64
from html import escape

from aiohttp import web

from .. import words
from ..core.linking import LinkDone, LinkRefused
from ..db.persona import Persona
from ..db.profile import Profile
from ..networks.login import LoginStep
from ..security.mfa import qr_png
from .portal_look import field, hidden, link_button, select
from .portal_routes import HOME, Me, PortalCore, Refused
from .signin_routes import cookie_account

LINK = "/account/link"
STEP = "/account/link/step"
CONSENT_FIELD = "consent"


def _step_body(flow_id: str, step: LoginStep, csrf: str, network: str, profile: str) -> str:
    """One step of a link: what the network (or the bridge) asks, and a form to answer."""
    answer = step.fields[0] if step.fields else None
    qr = ""
    if step.qr:
        png, size = qr_png(step.qr)
        data = base64.b64encode(png).decode()
        qr = (f'<p><img id="login-qr" src="data:image/png;base64,{data}" width="{size}" '
              f'height="{size}" alt="QR code to scan with the {escape(network)} app"></p>'
              '<p class="hint">Press "I scanned it" once your phone accepted it; an expired '
              "code is replaced by a new one.</p>")
    head = f"<h1>Link {escape(network)}</h1>" + (
        f'<p class="hint">Into the profile <strong>{escape(profile)}</strong>.</p>'
        if profile else "")
    if answer is None:
        return head + f'<div class="card"><p class="consent">{escape(step.message)}</p></div>'
    fields = hidden(csrf=csrf, flow=flow_id, field=answer.name, network=network,
                    profile=profile)
    if answer.name == CONSENT_FIELD:
        # The bridge's consent text, word for word as the bot says it, and two buttons.
        return head + f"""<div class="card" id="consent-step"><h2>Before anything is linked</h2>
<p class="consent" id="consent-text">{escape(step.message)}</p>
<div class="actions"><form method="post" action="{STEP}" class="inline">{fields}
<input type="hidden" name="answer" value="yes">
<button type="submit" id="consent-yes">Yes, link the account</button></form>
<form method="post" action="{STEP}" class="inline">{fields}
<input type="hidden" name="answer" value="no">
<button type="submit" class="secondary" id="consent-no">No, cancel</button></form>
</div></div>"""
    if step.qr and answer.name == "done":
        # Nothing to type: the button asks whether the phone accepted the code (and shows a
        # new code when this one expired).
        return head + f"""<div class="card" id="link-step"><p class="consent" id="step-text">
{escape(step.message)}</p>{qr}<form method="post" action="{STEP}">{fields}
<input type="hidden" name="answer" value="done">
<button type="submit" id="answer-submit">I scanned it</button>
{link_button(HOME, "Cancel", element_id="cancel")}</form></div>"""
    kind = "password" if answer.secret else "text"
    label = answer.label[:1].upper() + answer.label[1:]
    return head + f"""<div class="card" id="link-step"><p class="consent" id="step-text">
{escape(step.message)}</p>{qr}
<form method="post" action="{STEP}">{fields}
{field(label, "answer", kind=kind, autocomplete="one-time-code" if answer.name == "mfa_code"
       else ("current-password" if answer.secret else "off"), element_id="answer",
       hint="Sent to the bridge only; never shown again or logged." if answer.secret else "")}
<button type="submit" id="answer-submit">Continue</button>
{link_button(HOME, "Cancel", element_id="cancel")}</form></div>"""


class PortalLink:
    def __init__(self, core: PortalCore) -> None:
        self.core = core
        core.relink = self.relink

    def register(self, app: web.Application) -> None:
        page, r = self.core.page, app.router
        r.add_get(LINK, page("link", self.choose))
        r.add_post(LINK, page("link", self.start))
        r.add_post(STEP, page("link", self.answer))

    async def _choose_body(self, me: Me, network: str = "", profile_id: str = "",
                           address: str = "") -> str:
        linking, _ = self.core.ready()
        networks = linking.networks()
        profiles = await self.core.storage.profiles.for_account(me.account_id)
        if not networks:
            return "<h1>Link a network</h1><p>No network is running on this bridge.</p>"
        flows = {name: ", ".join(kinds) for name, kinds in networks.items()}
        return f"""<h1>Link a network</h1>
<p>Choose the network and the profile the account goes to. You prove that the account is
yours (its password, a code, or its own sign-in page), then you read exactly what the bridge
will do with it, and nothing is linked unless you agree.</p>
<div class="card"><form method="post" action="{LINK}">{hidden(csrf=me.viewer.csrf)}
{select("Network", "network", [(n, f"{n} ({flows[n]})") for n in networks], network,
        element_id="link-network")}
{select(words.PROFILES[:-1], "profile", [(p.id, p.name) for p in profiles], profile_id,
        element_id="link-profile")}
{field("Address on the network (if it asks for one)", "address", value=address,
       required=False, element_id="link-address",
       hint="For XMPP your JID (name@server), for Telegram your phone number; leave empty "
            "for networks that sign in on their own page.")}
<button type="submit" id="link-start">Continue</button></form></div>"""

    async def choose(self, request: web.Request, me: Me, _: dict[str, str]) -> web.Response:
        body = await self._choose_body(me, request.query.get("network", ""),
                                       request.query.get("profile", ""))
        return self.core.render(request, me, "Link a network", body, LINK)

    async def start(self, request: web.Request, me: Me, form: dict[str, str]
                    ) -> web.StreamResponse:
        network = form.get("network", "").lower()
        profile = await self.core.profile_of(me, form.get("profile", ""))
        address = form.get("address", "").strip() or None
        return await self._begin(request, me, network, address, profile)

    async def _begin(self, request: web.Request, me: Me, network: str, address: str | None,
                     profile: Profile) -> web.StreamResponse:
        linking, _ = self.core.ready()
        try:
            flow_id, step = await linking.start(me.account_id, network, address, profile.name,
                                                requester=me.mxid)
        except LinkRefused as e:
            body = await self._choose_body(me, network, profile.id, address or "")
            return self.core.render(request, me, "Link a network", body, LINK, str(e), 400)
        connector = linking.connectors.get(network)
        if connector is not None and connector.uses_oauth and step.url:
            # Its own start page first: it binds the flow to this browser (link_routes.py).
            raise web.HTTPSeeOther(step.url)
        return self._show(request, me, flow_id, step, network, profile.name)

    def _show(self, request: web.Request, me: Me, flow_id: str, step: LoginStep,
              network: str, profile: str, problem: str | None = None) -> web.Response:
        return self.core.render(request, me, f"Link {network}",
                                _step_body(flow_id, step, me.viewer.csrf, network, profile),
                                LINK, problem)

    async def answer(self, request: web.Request, me: Me, form: dict[str, str]
                     ) -> web.StreamResponse:
        linking, _ = self.core.ready()
        flow_id, name = form.get("flow", ""), form.get("field", "")
        network, profile = form.get("network", ""), form.get("profile", "")
        try:
            result = await linking.submit(me.account_id, flow_id,
                                          {name: form.get("answer", "")}, actor=me.actor)
        except LinkRefused as e:
            # The flow is over (the bot says: send "link" again): start again from the form.
            return self.core.render(request, me, "Not linked", f"""<div class="card">
<h1 class="error">Not linked</h1><p id="link-refused">{escape(str(e))}</p>
<div class="actions">{link_button(LINK, "Start again", kind="", element_id="start-again")}
{link_button(HOME, "Back to your account")}</div></div>""", LINK, status=400)
        if isinstance(result, LinkDone):
            persona = result.persona
            checks = "".join(f"\n  - {c}" for c in result.verified)
            raise self.core.done(HOME, words.linked(persona.platform, persona.external_user_id)
                                 + (f" Verified:{checks}" if checks else ""))
        next_id, step = result
        return self._show(request, me, next_id, step, network, profile)

    async def oauth_step(self, request: web.Request, account_id: str, flow_id: str,
                         step: LoginStep) -> web.Response | None:
        """Back from a network's OAuth page: the next step (MFA or consent) in this page, when
        this browser is signed in to the account that started the link; None otherwise (the
        person answers in their management room, where the bot asks too)."""
        core = self.core
        if await cookie_account(core.signin, core.session_networks, request) != account_id:
            return None
        try:
            me = await core.me(request, "link")
        except (Refused, web.HTTPException):
            return None
        return self._show(request, me, flow_id, step, request.match_info["network"], "")

    async def relink(self, request: web.Request, me: Me, persona: Persona, profile: Profile
                     ) -> web.StreamResponse:
        if self.core.permissions.refusal("link", me.mxid, me.level) is not None:
            raise Refused(str(self.core.permissions.refusal("link", me.mxid, me.level)), 403)
        return await self._begin(request, me, persona.platform, persona.external_user_id,
                                 profile)
