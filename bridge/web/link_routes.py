"""The browser side of linking an account through a network's OAuth page (`link slack`).

The bot (or the API) hands out a link to the bridge's start page. Opening it shows which
RelayForge account the network account will go to; confirming binds the flow to this browser
and sends it to the network's authorisation page. The network sends the browser back to the
callback: the code is exchanged and verified there (only in the browser that started), and
the person answers the next step (MFA, consent) in their management room.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from html import escape

from aiohttp import web

from ..core.linking import Linking, LinkRefused
from ..identity.signin import SignIn
from ..networks.login import LoginStep
from .browser import BROWSER, BrowserBinding
from .pages import link_start_page, page
from .requests import form_fields
from .signin_routes import account_summary

log = logging.getLogger("relayforge.web.link")
CALLBACK_PATH = "/link/{network}/callback"
# The step that followed a callback, as Linking's on_oauth_step hooks see it (with its flow
# id), for the page this request answers with (bridge/web/portal_link.py).
OAUTH_STEP: ContextVar[list[tuple[str, str, LoginStep]] | None] = ContextVar(
    "oauth_step", default=None)
ShowStep = Callable[[web.Request, str, str, LoginStep], Awaitable[web.Response | None]]


async def remember_oauth_step(account_id: str, flow_id: str, step: LoginStep) -> None:
    """An on_oauth_step hook: keeps the step for the callback request that caused it."""
    seen = OAUTH_STEP.get()
    if seen is not None:
        seen.append((account_id, flow_id, step))
START_PATH = "/link/{network}/start"


def callback_path(network: str) -> str:
    return CALLBACK_PATH.replace("{network}", network)


def start_path(network: str) -> str:
    return START_PATH.replace("{network}", network)


class LinkCallbackRoutes:
    def __init__(self) -> None:
        # Set once the linking flows exist (after the Matrix side is up).
        self.linking: Linking | None = None
        self.binding: BrowserBinding | None = None
        self.signin: SignIn | None = None
        # The portal's page for the next step, when this browser is signed in to the account
        # that started the link (else the person answers in their management room).
        self.show_step: ShowStep | None = None

    def register(self, app: web.Application, binding: BrowserBinding, signin: SignIn) -> None:
        self.binding, self.signin = binding, signin
        app.router.add_get(START_PATH, self.start_page)
        app.router.add_post(START_PATH, self.start)
        app.router.add_get(CALLBACK_PATH, self.callback)

    async def start_page(self, request: web.Request) -> web.Response:
        """Shows whose account the link goes to; changes nothing (link previews are safe)."""
        if self.linking is None:
            return _not_ready()
        assert self.binding is not None and self.signin is not None
        network, start = request.match_info["network"], request.query.get("flow", "")
        target = await self.linking.oauth_start_target(network, start)
        if target is None:
            return _answer(400, "Not linked", 'This link is unknown, expired or already '
                           f'used. Start again with "link {network}" in your management room.')
        account_id, profile = target
        summary = await account_summary(self.linking.accounts, self.signin, account_id)
        return web.Response(content_type="text/html", text=link_start_page(
            network, profile, summary, start, self.binding.csrf_token(request)))

    async def start(self, request: web.Request) -> web.Response:
        if self.linking is None:
            return _not_ready()
        assert self.binding is not None
        form = await form_fields(request)
        self.binding.check_form(request, form)
        try:
            url = await self.linking.open_oauth(request.match_info["network"],
                                                str(form.get("flow", "")), request[BROWSER])
        except LinkRefused as e:
            return _answer(400, "Not linked", str(e))
        raise web.HTTPSeeOther(url)

    async def callback(self, request: web.Request) -> web.Response:
        if self.linking is None:
            return _not_ready()
        query = request.query
        seen: list[tuple[str, str, LoginStep]] = []
        token = OAUTH_STEP.set(seen)
        try:
            await self.linking.oauth_callback(request.match_info["network"],
                                              query.get("state", ""), query.get("code"),
                                              query.get("error"), request[BROWSER])
        except LinkRefused as e:
            return _answer(400, "Not linked", str(e))
        finally:
            OAUTH_STEP.reset(token)
        if self.show_step is not None and seen:
            shown = await self.show_step(request, *seen[0])
            if shown is not None:
                return shown
        return _answer(200, "Almost done", "The account is verified. Go back to your "
                       "management room in Matrix and answer the bridge there to finish.")


def _not_ready() -> web.Response:
    return _answer(503, "Not ready", "The bridge is starting; try the link again in a minute.")


def _answer(status: int, title: str, text: str) -> web.Response:
    return web.Response(status=status, content_type="text/html",
                        text=page(title, f"<h1>{escape(title)}</h1><p>{escape(text)}</p>"))
