"""The support dashboard: find an account, see its relationships and audit trail, merge and
reverse merges (each after a confirmation page naming both accounts).

Only for people whose Matrix user has the admin level in `bridge.permissions` (the same rule as
the bot's `admin` command). Every view and action is audited with the admin as the actor.
"""

from __future__ import annotations

import attrs
from aiohttp import web
from yarl import URL

from ..audit import AuditEvent, AuditLog
from ..db import Storage
from ..db.account import AccountStatus
from ..db.account_search import MAX_QUERY, AccountSearchStore
from ..identity.accounts import Accounts
from ..identity.errors import IdentityError
from ..identity.merge import Merges
from ..identity.signin import SignIn
from ..security.anomaly import SessionNetworks
from ..security.permissions import Permissions
from . import admin_pages
from .browser import BrowserBinding
from .portal_look import Viewer, error_page, layout
from .requests import form_fields
from .signin_routes import account_summary, cookie_account, html

SEARCH_LIMIT = 20
AUDIT_LIMIT = 50
DASHBOARD = "/admin/dashboard"


@attrs.frozen
class Admin:
    mxid: str
    viewer: Viewer


def account_url(account_id: str, done: str | None = None) -> URL:
    url = URL("/admin/accounts") / account_id
    return url.with_query(done=done) if done else url


class AdminRoutes:
    def __init__(self, signin: SignIn, accounts: Accounts, merges: Merges, storage: Storage,
                 audit: AuditLog, binding: BrowserBinding, permissions: Permissions,
                 session_networks: SessionNetworks | None = None) -> None:
        self.signin = signin
        self.session_networks = session_networks
        self.accounts = accounts
        self.merges = merges
        self.storage = storage
        self.search_store = AccountSearchStore(storage.db)
        self.audit = audit
        self.binding = binding
        self.permissions = permissions

    def register(self, app: web.Application) -> None:
        app.router.add_get(DASHBOARD, self.dashboard)
        app.router.add_get("/admin/accounts/{account_id}", self.account)
        app.router.add_get("/admin/merge", self.confirm_merge)
        app.router.add_post("/admin/merge", self.merge)
        app.router.add_get("/admin/unmerge", self.confirm_unmerge)
        app.router.add_post("/admin/unmerge", self.unmerge)

    async def _admin(self, request: web.Request) -> Admin:
        """The admin asking, or a refusal (the same for every route here)."""
        account = await cookie_account(self.signin, self.session_networks, request)
        if account is None:
            raise web.HTTPSeeOther("/auth/sign-in")
        # The same table and rule as the bot's `admin` command, the API and the portal.
        mxid, level = self.permissions.best_of(await self.storage.accounts.matrix_users(account))
        viewer = Viewer(account, mxid, self.binding.csrf_token(request))
        refusal = self.permissions.refusal("admin", mxid, level)
        if refusal is None and mxid is not None:
            return Admin(mxid, viewer)
        raise web.HTTPForbidden(
            text=error_page(f"The support dashboard is for bridge admins. {refusal or ''}"
                            .strip(), 403, viewer=viewer),
            content_type="text/html")

    @staticmethod
    def _page(title: str, body: str, admin: Admin, status: int = 200) -> web.Response:
        return html(layout(title, body, admin.viewer, DASHBOARD), status=status)

    @staticmethod
    def _refused(message: str, admin: Admin, status: int = 400) -> web.Response:
        return html(error_page(message, status, viewer=admin.viewer), status=status)

    async def _names(self, mxids: list[str]) -> admin_pages.Names:
        providers = {p.id: p.config.name for p in self.signin.providers.values()}
        people = await self.search_store.display_names([m for m in mxids if m.startswith("@")])
        return admin_pages.Names(providers, people)

    # ---- search ----------------------------------------------------------------------------

    async def dashboard(self, request: web.Request) -> web.Response:
        admin = await self._admin(request)
        query = request.query.get("q", "").strip()
        if len(query) > MAX_QUERY:
            return self._refused(f"Search for at most {MAX_QUERY} characters.", admin)
        found: list[admin_pages.Match] = []
        more = False
        if query:
            ids, more = await self.search_store.search(query, SEARCH_LIMIT)
            for account_id in ids:
                view = await self.accounts.view(account_id)
                found.append(admin_pages.Match(
                    account_id, view.account.status.value, view.matrix_users,
                    sorted({i.email for i in view.identities if i.email}),
                    view.account.created_at))
            await self.audit.append(AuditEvent.ADMIN_ACTION, actor=admin.mxid, details={
                "what": "searched_accounts", "query": query, "matches": len(found)})
        body = (f"<h1>Support dashboard</h1>"
                '<p><a href="/admin/holds" id="holds-link">Legal holds</a></p>'
                f"{admin_pages.search_form(query)}"
                f"{admin_pages.results(query, found, more, SEARCH_LIMIT)}")
        return self._page("Support dashboard", body, admin)

    # ---- one account -----------------------------------------------------------------------

    async def account(self, request: web.Request) -> web.Response:
        admin = await self._admin(request)
        account_id = request.match_info["account_id"]
        try:
            view = await self.accounts.view(account_id)
        except IdentityError as e:
            return self._refused(str(e), admin, 404)
        await self.audit.append(AuditEvent.ADMIN_ACTION, actor=admin.mxid, account=account_id,
                                details={"what": "viewed_account"})
        merges = await self.storage.merges.involving(account_id)
        audit = await self.audit.latest(AUDIT_LIMIT, who=account_id)
        names = await self._names([*view.matrix_users, *(r.actor for r in audit),
                                   *(m.actor for m in merges),
                                   *(m.reversed_by for m in merges if m.reversed_by)])
        body = admin_pages.account_page(view, names, merges, audit, AUDIT_LIMIT,
                                        request.query.get("done"))
        return self._page(f"Account {account_id}", body, admin)

    # ---- merge and reverse: a confirmation page (GET, changes nothing), then a POST --------

    async def _mergeable(self, into_id: str, from_id: str) -> str | None:
        """Why these two cannot be merged, in the words of the merge itself, or None."""
        if not into_id or not from_id:
            return "Name both accounts: the one to keep and the one to merge into it."
        if into_id == from_id:
            return "That is the same account twice: nothing to merge."
        for account_id in (into_id, from_id):
            account = await self.storage.accounts.get(account_id)
            if account is None:
                return f"There is no account {account_id}."
            if account.status != AccountStatus.ACTIVE:
                return (f"Account {account_id} was merged already, into "
                        f"{account.merged_into}.")
        return None

    async def confirm_merge(self, request: web.Request) -> web.Response:
        admin = await self._admin(request)
        into_id = request.query.get("into", "").strip()
        from_id = request.query.get("from", "").strip()
        problem = await self._mergeable(into_id, from_id)
        if problem:
            return self._refused(problem, admin)
        into = await account_summary(self.accounts, self.signin, into_id)
        source = await account_summary(self.accounts, self.signin, from_id)
        return self._page("Merge accounts", admin_pages.confirm_merge(
            into, source, admin.viewer.csrf), admin)

    async def merge(self, request: web.Request) -> web.Response:
        admin = await self._admin(request)
        form = await form_fields(request)
        self.binding.check_form(request, form)
        into_id, from_id = str(form.get("into", "")).strip(), str(form.get("from", "")).strip()
        problem = await self._mergeable(into_id, from_id)
        if problem:
            return self._refused(problem, admin)
        try:
            result = await self.merges.merge(into_id, from_id, actor=admin.mxid)
        except IdentityError as e:
            return self._refused(str(e), admin)
        raise web.HTTPSeeOther(account_url(
            into_id, f"Merged {from_id} into {into_id} (merge {result.merge_id})."))

    async def confirm_unmerge(self, request: web.Request) -> web.Response:
        admin = await self._admin(request)
        merge_id = request.query.get("merge_id", "")
        record = await self.storage.merges.get(merge_id)
        if record is None:
            return self._refused(f"There is no merge {merge_id}.", admin, 404)
        if record.reversed_at is not None:
            return self._refused(f"Merge {merge_id} was already reversed.", admin)
        source = await account_summary(self.accounts, self.signin, record.from_account)
        into = await account_summary(self.accounts, self.signin, record.into_account)
        names = await self._names([record.actor])
        return self._page("Reverse merge", admin_pages.confirm_reverse(
            record, names, source, into, admin.viewer.csrf), admin)

    async def unmerge(self, request: web.Request) -> web.Response:
        admin = await self._admin(request)
        form = await form_fields(request)
        self.binding.check_form(request, form)
        merge_id = str(form.get("merge_id", ""))
        record = await self.storage.merges.get(merge_id)
        try:
            await self.merges.reverse(merge_id, actor=admin.mxid)
        except IdentityError as e:
            return self._refused(str(e), admin)
        assert record is not None
        raise web.HTTPSeeOther(account_url(
            record.from_account, f"Reversed merge {merge_id}: account {record.from_account} "
            f"is active again."))
