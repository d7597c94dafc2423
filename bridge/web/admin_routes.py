"""The support dashboard: find an account, see its relationships, merge and reverse merges.

Only for people whose Matrix user has the admin level in `bridge.permissions`. Every action is
audited with the admin as the actor.
"""

from __future__ import annotations

from html import escape

from aiohttp import web
from yarl import URL

from ..audit import AuditEvent, AuditLog
from ..db import Storage
from ..identity.accounts import Accounts
from ..identity.errors import IdentityError
from ..identity.merge import Merges
from ..identity.signin import SignIn
from ..security.anomaly import SessionNetworks
from ..security.permissions import Permissions
from . import pages
from .browser import BrowserBinding
from .requests import form_fields
from .signin_routes import cookie_account, html


class AdminRoutes:
    def __init__(self, signin: SignIn, accounts: Accounts, merges: Merges, storage: Storage,
                 audit: AuditLog, binding: BrowserBinding, permissions: Permissions,
                 session_networks: SessionNetworks | None = None) -> None:
        self.signin = signin
        self.session_networks = session_networks
        self.accounts = accounts
        self.merges = merges
        self.storage = storage
        self.audit = audit
        self.binding = binding
        self.permissions = permissions

    def register(self, app: web.Application) -> None:
        app.router.add_get("/admin/dashboard", self.dashboard)
        app.router.add_post("/admin/merge", self.merge)
        app.router.add_post("/admin/unmerge", self.unmerge)

    async def _admin(self, request: web.Request) -> str:
        """The admin's MXID, or a refusal."""
        account = await cookie_account(self.signin, self.session_networks, request)
        if account is None:
            raise web.HTTPSeeOther("/auth/sign-in")
        # The same table and rule as the bot's `admin` command and the provisioning API.
        mxid, level = self.permissions.best_of(await self.storage.accounts.matrix_users(account))
        refusal = self.permissions.refusal("admin", mxid, level)
        if refusal is None and mxid is not None:
            return mxid
        raise web.HTTPForbidden(text=f"The support dashboard is for bridge admins. "
                                f"{refusal or ''}".strip())

    async def dashboard(self, request: web.Request) -> web.Response:
        admin = await self._admin(request)
        query = request.query.get("q", "")
        csrf = self.binding.csrf_token(request)
        sections = []
        for account_id in await self.accounts.find(query):
            await self.audit.append(AuditEvent.ADMIN_ACTION, actor=admin, account=account_id,
                                    details={"what": "viewed_account"})
            sections.append(await self._account_card(account_id, csrf))
        if query and not sections:
            sections.append('<p id="no-match">No account matches.</p>')
        notice = request.query.get("done", "")
        body = f"""
<h1>Support dashboard</h1>
{f'<p class="ok" id="notice">{escape(notice)}</p>' if notice else ""}
<form method="get" action="/admin/dashboard">
  <input name="q" id="q" value="{escape(query)}" placeholder="MXID, email or account id"
   size="40"> <button type="submit" id="find">Find</button>
</form>
{"".join(sections)}
<div class="card"><h2>Merge two accounts</h2>
<form method="post" action="/admin/merge">{pages.hidden(csrf=csrf)}
  <input name="into" placeholder="keep this account id" required>
  <input name="from" placeholder="merge this account id into it" required>
  <button type="submit" id="admin-merge">Merge</button>
</form></div>"""
        return html(pages.page("Support dashboard", body))

    async def _account_card(self, account_id: str, csrf: str) -> str:
        view = await self.accounts.view(account_id)
        rows = [f"<tr><th>Status</th><td>{escape(view.account.status.value)}"
                + (f" (merged into {escape(view.account.merged_into)})"
                   if view.account.merged_into else "") + "</td></tr>",
                f"<tr><th>Credits</th><td>{view.account.credits}</td></tr>",
                f"<tr><th>Matrix users</th><td>{escape(', '.join(view.matrix_users))}</td></tr>"]
        for identity in view.identities:
            rows.append(f"<tr><th>Sign-in</th><td>{escape(identity.provider_id)}: "
                        f"{escape(identity.email or '-')} ({escape(identity.added_how)})</td></tr>")
        for profile in view.profiles:
            personas = ", ".join(f"{p.platform}:{p.external_user_id} ({p.status.value})"
                                 for p in profile.personas) or "no personas"
            rows.append(f"<tr><th>Profile {escape(profile.profile.name)}</th>"
                        f"<td>{escape(personas)}</td></tr>")
        merges = []
        for record in await self.storage.merges.involving(account_id):
            state = "reversed" if record.reversed_at else "in effect"
            action = "" if record.reversed_at else (
                f'<form method="post" action="/admin/unmerge" style="display:inline">'
                f'{pages.hidden(merge_id=record.id, csrf=csrf)}'
                f'<button type="submit" class="secondary" id="unmerge-{escape(record.id)}">'
                "Reverse</button></form>")
            merges.append(f"<li>{escape(record.from_account)} &rarr; "
                          f"{escape(record.into_account)} by {escape(record.actor)} "
                          f"({state}) {action}</li>")
        return (f'<div class="card account" id="account-{escape(account_id)}">'
                f"<h2>Account {escape(account_id)}</h2><table>{''.join(rows)}</table>"
                f"<h3>Merges</h3><ul>{''.join(merges) or '<li>none</li>'}</ul></div>")

    async def merge(self, request: web.Request) -> web.Response:
        admin = await self._admin(request)
        form = await form_fields(request)
        self.binding.check_form(request, form)
        try:
            result = await self.merges.merge(str(form.get("into", "")),
                                             str(form.get("from", "")), actor=admin)
        except IdentityError as e:
            return html(pages.error_page(str(e)), status=400)
        raise web.HTTPSeeOther(URL("/admin/dashboard").with_query(
            q=str(form["into"]), done=f"Merged ({result.merge_id})"))

    async def unmerge(self, request: web.Request) -> web.Response:
        admin = await self._admin(request)
        form = await form_fields(request)
        self.binding.check_form(request, form)
        merge_id = str(form.get("merge_id", ""))
        record = await self.storage.merges.get(merge_id)
        try:
            await self.merges.reverse(merge_id, actor=admin)
        except IdentityError as e:
            return html(pages.error_page(str(e)), status=400)
        assert record is not None
        raise web.HTTPSeeOther(URL("/admin/dashboard").with_query(
            q=record.from_account, done=f"Reversed {merge_id}"))
