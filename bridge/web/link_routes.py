"""Where a network's OAuth authorisation page sends the browser back when someone links an
account (`link slack`): the code is exchanged and verified, and the person answers the next
step (MFA, consent) in their management room."""

from __future__ import annotations

import logging
from html import escape

from aiohttp import web

from ..core.linking import Linking, LinkRefused
from .pages import page

log = logging.getLogger("relayforge.web.link")
CALLBACK_PATH = "/link/{network}/callback"


def callback_path(network: str) -> str:
    return CALLBACK_PATH.replace("{network}", network)


class LinkCallbackRoutes:
    def __init__(self) -> None:
        # Set once the linking flows exist (after the Matrix side is up).
        self.linking: Linking | None = None

    def register(self, app: web.Application) -> None:
        app.router.add_get(CALLBACK_PATH, self.callback)

    async def callback(self, request: web.Request) -> web.Response:
        if self.linking is None:
            return _answer(503, "Not ready", "The bridge is starting; try the link again in a "
                           "minute.")
        query = request.query
        try:
            await self.linking.oauth_callback(request.match_info["network"],
                                              query.get("state", ""), query.get("code"),
                                              query.get("error"))
        except LinkRefused as e:
            return _answer(400, "Not linked", str(e))
        return _answer(200, "Almost done", "The account is verified. Go back to your "
                       "management room in Matrix and answer the bridge there to finish.")


def _answer(status: int, title: str, text: str) -> web.Response:
    return web.Response(status=status, content_type="text/html",
                        text=page(title, f"<h1>{escape(title)}</h1><p>{escape(text)}</p>"))
