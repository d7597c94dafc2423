"""The consent page: the person, signed in with the bridge's own sign-in, sees which agent asks
for which profiles, networks and actions, may narrow them, and allows or refuses.

It lives under /auth/, so the browser binding (the `rf_browser` cookie, CSRF tokens on every
form) and the web rate limits apply to it as to every other sign-in page. A browser that is
not signed in is sent to the sign-in page and comes back here afterwards.
"""

from __future__ import annotations

from html import escape
from urllib.parse import urlencode, urlparse

from aiohttp import web

from ..db import Storage
from ..identity.signin import SignIn
from ..security.anomaly import SessionNetworks
from ..security.permissions import Permissions
from ..web import pages
from ..web.browser import BrowserBinding
from ..web.requests import form_fields
from ..web.signin_routes import RETURN_COOKIE, cookie_account, html
from .oauth import REQUEST_KIND, AgentAuthorization

CONSENT_PATH = "/auth/agent"
_WHAT = {"read": "read your bridged rooms and their recent messages, and search them",
         "send": "send messages as you (replies and thread messages too)",
         "edit": "edit messages sent as you", "delete": "delete messages sent as you",
         "react": "react to messages as you"}


class ConsentRoutes:
    def __init__(self, storage: Storage, signin: SignIn, binding: BrowserBinding,
                 networks: SessionNetworks | None, authorization: AgentAuthorization,
                 permissions: Permissions) -> None:
        self.storage = storage
        self.signin = signin
        self.binding = binding
        self.networks = networks
        self.authorization = authorization
        self.permissions = permissions

    async def _refusal(self, account_id: str) -> str | None:
        """The same level the bot asks of a person: someone the admin cut off authorises
        no agent."""
        who, level = self.permissions.best_of(
            await self.storage.accounts.matrix_users(account_id))
        return Permissions.refusal("agents", who, level)

    def register(self, app: web.Application) -> None:
        app.router.add_get(CONSENT_PATH, self.page)
        app.router.add_post(CONSENT_PATH, self.decide)

    async def _request(self, value: str) -> dict | None:
        record = await self.storage.one_time.peek(REQUEST_KIND, value)
        return record.payload if record is not None else None

    async def _choices(self, account_id: str) -> tuple[list[tuple[str, str, list[str]]],
                                                       list[str]]:
        """The account's profiles (id, name, its linked networks) and the networks."""
        profiles = []
        for profile in await self.storage.profiles.for_account(account_id):
            personas = await self.storage.personas.for_profile(profile.id)
            profiles.append((profile.id, profile.name, sorted({p.platform for p in personas})))
        networks = sorted({n for _, _, linked in profiles for n in linked})
        return profiles, networks

    async def page(self, request: web.Request) -> web.Response:
        value = request.query.get("request", "")
        pending = await self._request(value)
        if pending is None:
            return html(pages.error_page(
                "This authorisation request expired or was already answered: start again "
                "from your agent."), status=400)
        account = await cookie_account(self.signin, self.networks, request)
        if account is None:
            # Sign in first, then come back to this very page.
            buttons = [(p.id, p.config.name) for p in self.signin.providers.values()]
            response = html(pages.sign_in_page(buttons))
            response.set_cookie(RETURN_COOKIE, f"{CONSENT_PATH}?{urlencode({'request': value})}",
                                **self.binding.cookie_args(600))
            return response
        refused = await self._refusal(account)
        if refused is not None:
            return html(pages.error_page(refused), 403)
        client = await self.authorization.get_client(pending["client_id"])
        if client is None:
            return html(pages.error_page("The agent asking is no longer registered."), 400)
        profiles, networks = await self._choices(account)
        response = html(consent_page(
            await self.storage.agents.matrix_user(account) or account,
            client.client_name or client.client_id or "?",
            urlparse(pending["redirect_uri"]).netloc or pending["redirect_uri"],
            value, self.binding.csrf_token(request), profiles, networks, pending["scopes"]))
        response.del_cookie(RETURN_COOKIE, path="/")
        return response

    async def decide(self, request: web.Request) -> web.StreamResponse:
        form = await form_fields(request)
        self.binding.check_form(request, form)
        account = await cookie_account(self.signin, self.networks, request)
        if account is None:
            return html(pages.error_page("Your session ended: sign in again."), 401)
        refused = await self._refusal(account)
        if refused is not None:
            return html(pages.error_page(refused), 403)
        value = form.get("request", "")
        pending = await self._request(value)
        if pending is None:
            return html(pages.error_page("This authorisation request expired or was already "
                                         "answered: start again from your agent."), 400)
        profiles, networks = await self._choices(account)
        chosen_profiles = [pid for pid, _, _ in profiles if form.get(f"profile:{pid}")]
        chosen_networks = [n for n in networks if form.get(f"network:{n}")]
        chosen_actions = [a for a in pending["scopes"] if form.get(f"action:{a}")]
        allow = form.get("decision") == "allow"
        if allow and not (chosen_profiles and chosen_actions and (chosen_networks
                                                                  or not networks)):
            return html(pages.error_page("Choose at least one profile, one network and one "
                                         "action, or refuse."), 400)
        # Used once, whatever the answer: a second form post cannot mint a second code.
        if await self.storage.one_time.consume(REQUEST_KIND, value) is None:
            return html(pages.error_page("This authorisation request was already answered."),
                        400)
        if not allow:
            raise web.HTTPSeeOther(_error_redirect(pending))
        client = await self.authorization.get_client(pending["client_id"])
        if client is None:
            return html(pages.error_page("The agent asking is no longer registered."), 400)
        raise web.HTTPSeeOther(await self.authorization.granted(
            account, pending, client.client_name or "agent", chosen_actions, chosen_profiles,
            chosen_networks))


def _error_redirect(pending: dict) -> str:
    parsed = urlparse(pending["redirect_uri"])
    params = {"error": "access_denied", "error_description": "the person refused"}
    if pending.get("state") is not None:
        params["state"] = pending["state"]
    extra = urlencode(params)
    return parsed._replace(query=f"{parsed.query}&{extra}" if parsed.query else extra).geturl()


def _box(name: str, label: str, checked: bool = True) -> str:
    return (f'<label><input type="checkbox" name="{escape(name)}" value="on"'
            f'{" checked" if checked else ""}> {label}</label><br>')


def consent_page(person: str, agent: str, returns_to: str, request: str, csrf: str,
                 profiles: list[tuple[str, str, list[str]]], networks: list[str],
                 scopes: list[str]) -> str:
    profile_boxes = "".join(
        _box(f"profile:{pid}",
             f"<b>{escape(name)}</b> ({escape(', '.join(linked) or 'nothing linked yet')})")
        for pid, name, linked in profiles)
    network_boxes = "".join(_box(f"network:{n}", escape(n)) for n in networks) or (
        "<p>You have no linked accounts yet: link one with the bot first.</p>")
    action_boxes = "".join(_box(f"action:{a}", f"<b>{escape(a)}</b>: {escape(_WHAT[a])}")
                           for a in scopes)
    return pages.page("Allow an agent", f"""<h1>Allow the agent <span id="agent">{escape(agent)}
</span> to act as you?</h1>
<p id="person">Signed in as <strong>{escape(person)}</strong>.</p>
<p>It will get access tokens for RelayForge's MCP endpoint and return to
<code id="returns-to">{escape(returns_to)}</code>. Whatever it does goes through the same
checks as your own messages (the bridge's policy, your capabilities, your first-send
confirmations) and is in your audit log under its name. Untick what it should not have.</p>
<form method="post" action="{CONSENT_PATH}">{pages.hidden(request=request, csrf=csrf)}
<div class="card" id="profiles"><h2>Profiles</h2>{profile_boxes}</div>
<div class="card" id="networks"><h2>Networks</h2>{network_boxes}</div>
<div class="card" id="actions"><h2>Actions</h2>{action_boxes}</div>
<button id="allow" type="submit" name="decision" value="allow">Allow</button>
<button id="refuse" class="secondary" type="submit" name="decision" value="refuse">Refuse
</button></form>
<p>You can list and revoke agents in your management room: <code>agents</code>,
<code>agents revoke NAME</code>.</p>""")
