"""/account/agents: the person's agents on the web, beside the settings page, with a button
(a form with this browser's CSRF token) to revoke each, as `agents revoke NAME` does."""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape

from aiohttp import web

from ..audit import AuditEvent, AuditLog
from ..db import Storage
from ..db.agent import AgentGrant
from ..identity.signin import SignIn
from ..security.anomaly import SessionNetworks
from ..web import pages
from ..web.browser import BrowserBinding
from ..web.requests import form_fields
from ..web.signin_routes import AGENTS_PAGE, cookie_account, html

AGENTS_PATH = AGENTS_PAGE


def _when(ms: int | None) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC") if ms else (
        "never")


class AgentsPage:
    def __init__(self, storage: Storage, signin: SignIn, binding: BrowserBinding,
                 networks: SessionNetworks | None, audit: AuditLog) -> None:
        self.storage = storage
        self.signin = signin
        self.binding = binding
        self.networks = networks
        self.audit = audit

    def register(self, app: web.Application) -> None:
        app.router.add_get(AGENTS_PATH, self.page)
        app.router.add_post(f"{AGENTS_PATH}/revoke", self.revoke)

    async def _account(self, request: web.Request) -> str:
        account = await cookie_account(self.signin, self.networks, request)
        if account is None:
            raise web.HTTPSeeOther("/auth/sign-in")
        return account

    async def page(self, request: web.Request) -> web.Response:
        account = await self._account(request)
        grants = await self.storage.agents.grants(account)
        names = {p.id: p.name for p in await self.storage.profiles.for_account(account)}
        return html(agents_page(grants, names, self.binding.csrf_token(request),
                                request.query.get("revoked")))

    async def revoke(self, request: web.Request) -> web.StreamResponse:
        form = await form_fields(request)
        self.binding.check_form(request, form)
        account = await self._account(request)
        grant = await self.storage.agents.grant(form.get("agent", ""))
        if grant is None or grant.account_id != account or not grant.active:
            return html(pages.error_page("You have no such agent."), 404)
        await self.storage.agents.revoke_grant(grant.id)
        await self.audit.append(AuditEvent.AGENT, actor=account, account=account,
                                details={"change": "revoked", "agent": grant.name,
                                         "agent_id": grant.id, "reason": "settings page"})
        raise web.HTTPSeeOther(f"{AGENTS_PATH}?revoked=1")


def agents_page(grants: list[AgentGrant], profiles: dict[str, str], csrf: str,
                revoked: str | None) -> str:
    rows = "".join(
        f"<tr><td>{escape(g.name)}</td><td>{escape(', '.join(g.actions))}</td>"
        f"<td>{escape(', '.join(g.networks))}</td>"
        f"<td>{escape(', '.join(profiles.get(p, p) for p in g.profile_ids))}</td>"
        f"<td>{_when(g.last_used_at)}</td><td><form method=\"post\" "
        f"action=\"{AGENTS_PATH}/revoke\">{pages.hidden(csrf=csrf, agent=g.id)}"
        f"<button class=\"secondary\" type=\"submit\">Revoke</button></form></td></tr>"
        for g in grants)
    table = (f"<table id=\"agents\"><tr><th>Agent</th><th>Actions</th><th>Networks</th>"
             f"<th>Profiles</th><th>Last used</th><th></th></tr>{rows}</table>" if grants
             else "<p>You have authorised no agents.</p>")
    flash = '<p class="ok" id="notice">Revoked: its next call is refused.</p>' if revoked else ""
    return pages.page("Your agents", f"""{pages.sign_out_form(csrf)}<h1>Your AI agents</h1>
{flash}<div class="card">{table}</div><p><a href="/account/settings">Account settings</a></p>""")
