"""Sign-in, account choice, linking, settings and merge: the web side of the linking flows."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..db import Storage
from ..identity.accounts import Accounts
from ..identity.signin import SESSION_TTL, CallbackResult, FlowRefused, Outcome, Purpose, SignIn
from ..security.anomaly import SessionNetworks
from . import pages
from .browser import BROWSER, PENDING_COOKIE, SESSION_COOKIE, BrowserBinding
from .portal_look import Viewer
from .requests import form_fields, json_object, json_or_form

SETTINGS = "/account/settings"
# A page that sent the browser to sign in first (the agent consent page) and where to go back.
RETURN_COOKIE = "rf_return"
AGENTS_PAGE = "/account/agents"


def after_sign_in(request: web.Request) -> str:
    """Where a browser goes once signed in: back to the page that asked (only a path on this
    bridge, never another site), else the settings."""
    back = request.cookies.get(RETURN_COOKIE, "")
    if back.startswith("/") and not back.startswith(("//", "/\\")):
        return back
    return SETTINGS


def wants_json(request: web.Request) -> bool:
    return "application/json" in request.headers.get("Accept", "") or (
        request.content_type == "application/json")


def html(body: str, status: int = 200) -> web.Response:
    return web.Response(text=body, status=status, content_type="text/html", charset="utf-8")


async def cookie_account(signin: SignIn, networks: SessionNetworks | None,
                         request: web.Request) -> str | None:
    """The account signed in with this browser's session cookie; None when there is none, or
    when the session was just ended for coming from another network (sign in again)."""
    session = request.cookies.get(SESSION_COOKIE)
    account = await signin.session_account(session, request[BROWSER])
    if account is None or session is None or networks is None:
        return account
    refused = await networks.check(request, "web_session", session, account, SESSION_TTL)
    return None if refused else account


def bearer(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


async def account_summary(accounts: Accounts, signin: SignIn, account_id: str
                          ) -> pages.AccountSummary:
    view = await accounts.view(account_id)
    names = {p.id: p.config.name for p in signin.providers.values()}
    return pages.AccountSummary(
        account_id, view.matrix_users, [p.profile.name for p in view.profiles],
        sorted({names.get(i.provider_id, i.provider_id) for i in view.identities}),
        view.account.credits)


class SignInRoutes:
    def __init__(self, signin: SignIn, accounts: Accounts, storage: Storage,
                 binding: BrowserBinding, session_networks: SessionNetworks | None = None
                 ) -> None:
        self.signin = signin
        self.session_networks = session_networks
        self.accounts = accounts
        self.storage = storage
        self.binding = binding

    def register(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/auth/sign-in", self.sign_in_page)
        r.add_get("/oauth/{provider}/start", self.start)
        r.add_get("/oauth/{provider}/callback", self.callback)
        r.add_get("/auth/account-choice", self.account_choice)
        r.add_post("/auth/account-choice/create", self.create_account)
        r.add_post("/api/account/complete-linking", self.complete_linking)
        r.add_get("/auth/matrix", self.matrix_login_page)
        r.add_post("/auth/matrix", self.matrix_login)
        r.add_post("/auth/sign-out", self.sign_out)
        r.add_get(SETTINGS, self.settings)
        r.add_post("/account/merge", self.merge_form)
        r.add_post("/api/account/merge", self.merge_api)

    @property
    def _buttons(self) -> list[tuple[str, str]]:
        return [(p.id, p.config.name) for p in self.signin.providers.values()]

    def _refused(self, request: web.Request, error: FlowRefused, status: int | None = None
                 ) -> web.Response:
        status = status or error.status
        if wants_json(request):
            return web.json_response({"success": False, "error": str(error)}, status=status)
        return html(pages.error_page(str(error), status=status), status=status)

    def _signed_in(self, response: web.StreamResponse, session_id: str) -> None:
        response.set_cookie(SESSION_COOKIE, session_id, **self.binding.cookie_args(12 * 3600))

    async def _account(self, request: web.Request) -> str | None:
        return await cookie_account(self.signin, self.session_networks, request)

    async def _summary(self, account_id: str) -> pages.AccountSummary:
        return await account_summary(self.accounts, self.signin, account_id)

    # ---- pages and the OAuth dance ---------------------------------------------------------

    async def sign_in_page(self, request: web.Request) -> web.Response:
        return html(pages.sign_in_page(self._buttons))

    async def start(self, request: web.Request) -> web.Response:
        try:
            purpose = Purpose(request.query.get("purpose", "signin"))
        except ValueError:
            return self._refused(request, FlowRefused("unknown purpose"))
        account = None
        if purpose in (Purpose.MERGE, Purpose.ADD):
            account = await self._account(request)
            if account is None:
                return self._refused(request, FlowRefused("sign in first"), 401)
        try:
            url = await self.signin.start(request.match_info["provider"], purpose,
                                          request[BROWSER], account)
        except FlowRefused as e:
            return self._refused(request, e, 404)
        raise web.HTTPSeeOther(url)

    async def callback(self, request: web.Request) -> web.StreamResponse:
        if "error" in request.query:
            return self._refused(request, FlowRefused(
                f"the provider refused: {request.query.get('error')}"))
        try:
            result = await self.signin.callback(
                request.match_info["provider"], request.query.get("code"),
                request.query.get("state"), request[BROWSER], await self._account(request))
        except FlowRefused as e:
            return self._refused(request, e)
        if wants_json(request):
            return self._callback_json(result)
        return await self._callback_html(request, result)

    def _callback_json(self, result: CallbackResult) -> web.Response:
        body: dict[str, Any]
        if result.outcome == Outcome.PENDING_CHOICE:
            body = {"type": "pending_choice", "pendingSessionId": result.session_id,
                    "redirectUrl": "/auth/account-choice"}
        elif result.outcome == Outcome.EXISTING_SESSION:
            body = {"type": "existing_session", "existingSessionId": result.session_id}
        elif result.outcome == Outcome.MERGE_SESSION:
            body = {"type": "merge_session", "mergeSessionId": result.session_id}
        else:
            message = (f"{result.provider_name} added to your account"
                       if result.outcome == Outcome.PROVIDER_ADDED
                       else f"Signed in with {result.provider_name}")
            body = {"type": result.outcome.value, "sessionUrl": SETTINGS, "message": message,
                    "sessionId": result.session_id}
        response = web.json_response(body)
        if result.outcome in (Outcome.SIGNED_IN, Outcome.PROVIDER_ADDED):
            self._signed_in(response, result.session_id)
        return response

    async def _callback_html(self, request: web.Request, result: CallbackResult
                             ) -> web.StreamResponse:
        if result.outcome == Outcome.PENDING_CHOICE:
            raise web.HTTPSeeOther(f"/auth/account-choice?session={result.session_id}")
        if result.outcome == Outcome.EXISTING_SESSION:
            pending = request.cookies.get(PENDING_COOKIE, "")
            payload = await self.signin.pending(pending, request[BROWSER])
            if payload is None:
                return self._refused(request, FlowRefused(
                    "the account choice expired: sign in again"))
            return html(pages.confirm_link_page(
                self.signin.provider(payload["provider"]).config.name, payload["email"],
                pending, result.session_id, self.binding.csrf_token(request)))
        if result.outcome == Outcome.MERGE_SESSION:
            into = await self._account(request)
            if into is None or result.account_id is None:
                return self._refused(request, FlowRefused("your session ended: sign in again",
                                                          403))
            return html(pages.confirm_merge_page(
                result.provider_name, result.session_id, self.binding.csrf_token(request),
                await self._summary(into), await self._summary(result.account_id)))
        back = after_sign_in(request)
        # The cookie is replaced: the session it held ends (it would linger in the list of
        # sessions, unusable from here).
        previous = request.cookies.get(SESSION_COOKIE)
        if previous and previous != result.session_id:
            await self.signin.end_session(previous)
        response = web.HTTPSeeOther(back if back != SETTINGS else SETTINGS + (
            "?added=" + result.identity.provider_id
            if result.outcome == Outcome.PROVIDER_ADDED else ""))
        self._signed_in(response, result.session_id)
        raise response

    async def account_choice(self, request: web.Request) -> web.Response:
        pending_id = request.query.get("session", "")
        payload = await self.signin.pending(pending_id, request[BROWSER])
        if payload is None:
            return self._refused(request, FlowRefused(
                "this choice expired, was already made, or was started in another browser: "
                "sign in again"))
        name = self.signin.provider(payload["provider"]).config.name
        response = html(pages.account_choice_page(
            payload["email"], name, pending_id, self.binding.csrf_token(request),
            self._buttons))
        response.set_cookie(PENDING_COOKIE, pending_id, **self.binding.cookie_args(600))
        return response

    async def create_account(self, request: web.Request) -> web.StreamResponse:
        form = await form_fields(request)
        self.binding.check_form(request, form)
        try:
            session = await self.signin.create_account(str(form.get("session", "")),
                                                       request[BROWSER])
        except FlowRefused as e:
            return self._refused(request, e)
        response = web.HTTPSeeOther(SETTINGS + "?created=1")
        self._signed_in(response, session)
        response.del_cookie(PENDING_COOKIE, path="/")
        raise response

    async def complete_linking(self, request: web.Request) -> web.Response:
        body, as_json = await json_or_form(request)
        if not as_json:
            self.binding.check_form(request, body)
        pending, existing = body.get("pendingSessionId"), body.get("existingSessionId")
        if not isinstance(pending, str) or not isinstance(existing, str):
            return self._refused(request, FlowRefused(
                "pendingSessionId and existingSessionId are both required"))
        try:
            account_id, identity = await self.signin.complete_linking(
                pending, existing, request[BROWSER])
        except FlowRefused as e:
            return self._refused(request, e)
        name = self.signin.provider(identity.provider_id).config.name
        if as_json:
            return web.json_response({"success": True,
                                      "message": "Accounts linked successfully"})
        response = html(pages.linked_page(name, identity.email,
                                          self.binding.csrf_token(request)))
        self._signed_in(response, await self.signin.new_session(account_id,
                                                                request[BROWSER]))
        response.del_cookie(PENDING_COOKIE, path="/")
        return response

    async def _pending_choice(self, request: web.Request) -> tuple[str, dict] | None:
        """The account choice this browser is in the middle of, if any."""
        pending = request.cookies.get(PENDING_COOKIE, "")
        payload = await self.signin.pending(pending, request[BROWSER]) if pending else None
        return (pending, payload) if payload is not None else None

    async def matrix_login_page(self, request: web.Request) -> web.Response:
        """The bot's login link: a page that asks (a GET signs nobody in and uses nothing
        up, so another site cannot sign a browser in to its account, and a link preview
        cannot burn the link)."""
        token = request.query.get("token", "")
        mxid = await self.signin.login_link_user(token)
        if mxid is None:
            return self._refused(request, FlowRefused(
                'this sign-in link expired or was already used: send "login-link" to the '
                "bot for a new one"))
        choice = await self._pending_choice(request)
        linking = None
        if choice is not None:
            # From the account choice page: this Matrix account is the one to link to.
            payload = choice[1]
            linking = (self.signin.provider(payload["provider"]).config.name,
                       payload["email"])
        return html(pages.matrix_sign_in_page(mxid, token, self.binding.csrf_token(request),
                                              linking))

    async def matrix_login(self, request: web.Request) -> web.StreamResponse:
        form = await form_fields(request)
        self.binding.check_form(request, form)
        token = str(form.get("token", ""))
        browser = request[BROWSER]
        choice = await self._pending_choice(request)
        try:
            if choice is not None:
                handoff = await self.signin.matrix_link_session(token, browser)
                account_id, identity = await self.signin.complete_linking(choice[0], handoff,
                                                                          browser)
                name = self.signin.provider(identity.provider_id).config.name
                response = html(pages.linked_page(name, identity.email,
                                                  self.binding.csrf_token(request)))
                self._signed_in(response, await self.signin.new_session(account_id, browser))
                response.del_cookie(PENDING_COOKIE, path="/")
                return response
            session = await self.signin.matrix_login(token, browser)
        except FlowRefused as e:
            return self._refused(request, e)
        redirect = web.HTTPSeeOther(after_sign_in(request))
        self._signed_in(redirect, session)
        raise redirect

    async def sign_out(self, request: web.Request) -> web.StreamResponse:
        form = await form_fields(request)
        self.binding.check_form(request, form)
        await self.signin.end_session(request.cookies.get(SESSION_COOKIE, ""))
        if wants_json(request):
            response: web.StreamResponse = web.json_response({"success": True})
        else:
            response = web.HTTPSeeOther("/auth/sign-in")
        response.del_cookie(SESSION_COOKIE, path="/")
        if isinstance(response, web.HTTPException):
            raise response
        return response

    # ---- settings and merge ----------------------------------------------------------------

    async def settings(self, request: web.Request) -> web.StreamResponse:
        account_id = await self._account(request)
        if account_id is None:
            raise web.HTTPSeeOther("/auth/sign-in")
        view = await self.accounts.view(account_id)
        emails = sorted({i.email for i in view.identities if i.email and i.email_verified})
        names = {p.id: p.config.name for p in self.signin.providers.values()}
        providers = sorted({names.get(i.provider_id, i.provider_id) for i in view.identities})
        notice = None
        if "added" in request.query:
            notice = f"{names.get(request.query['added'], 'A provider')} added to your account"
        elif "created" in request.query:
            notice = "Your RelayForge account was created."
        # The agents page exists when the MCP endpoint is on (bridge/mcp/agents_page.py).
        agents = next((r.canonical for r in request.app.router.resources()
                       if r.canonical == AGENTS_PAGE), None)
        csrf = self.binding.csrf_token(request)
        viewer = Viewer(account_id, view.matrix_users[0] if view.matrix_users else None, csrf)
        return html(pages.settings_page(emails, providers, view.matrix_users,
                                        view.account.credits, self._buttons, csrf, notice,
                                        agents, viewer))

    async def merge_form(self, request: web.Request) -> web.Response:
        form = await form_fields(request)
        self.binding.check_form(request, form)
        try:
            result = await self.signin.merge(request.cookies.get(SESSION_COOKIE, ""),
                                             str(form.get("mergeSessionId", "")),
                                             request[BROWSER])
        except FlowRefused as e:
            return self._refused(request, e)
        return html(pages.merged_page(result.credits_merged, result.providers_added,
                                      self.binding.csrf_token(request)))

    async def merge_api(self, request: web.Request) -> web.Response:
        session = bearer(request)
        if session is None:
            return web.json_response({"success": False, "error": "Authorization: Bearer "
                                      "<sessionId> is required"}, status=401)
        # Who is asking comes before what they sent: a wrong session learns nothing about
        # how its body would have been read.
        if await self.signin.session_account(session, request[BROWSER]) is None:
            return web.json_response({"success": False, "error": "your session is unknown or "
                                      "expired: sign in first"}, status=403)
        body = await json_object(request)
        merge_id = body.get("mergeSessionId")
        if not isinstance(merge_id, str):
            return self._refused(request, FlowRefused("mergeSessionId is required"))
        try:
            # An API caller holds both session ids itself; browser binding applies to the
            # hand-off only when it was made in a browser (it always is: the callback).
            result = await self.signin.merge(session, merge_id, request[BROWSER])
        except FlowRefused as e:
            return self._refused(request, e)
        return web.json_response({"success": True, "creditsMerged": result.credits_merged,
                                  "providersAdded": result.providers_added})
