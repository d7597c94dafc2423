"""An agent for tests: the `mcp` SDK's own client over streamable HTTP with its OAuth client
(dynamic registration, PKCE), and a person who answers the bridge's sign-in and consent pages
in a cookie-holding browser."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from html import unescape
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx2
from mcp.client.auth import OAuthClientProvider
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import (
    AuthorizationCodeResult,
    OAuthClientInformationFull,
    OAuthClientMetadata,
    OAuthToken,
)

from .web import Browser

REDIRECT_URI = "http://127.0.0.1:9/callback"  # never opened: the code is read off the redirect
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')
_REQUEST = re.compile(r'name="request" value="([^"]+)"')
_BOX = re.compile(r'name="((?:profile|network|action):[^"]+)"')


class MemoryTokens:
    """The SDK's TokenStorage, in memory (what a real client keeps on disk)."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info


class Consenting:
    """The person's side of the authorisation: sign in (with the bot's login link) if asked,
    then tick what `keep` allows on the consent page and press Allow."""

    def __init__(self, web: Browser, login_token: Callable[[], Awaitable[str]],
                 keep: Callable[[str], bool] = lambda box: True) -> None:
        self.web = web
        self.login_token = login_token
        self.keep = keep
        self.consent_page = ""
        self.result: AuthorizationCodeResult | None = None

    async def redirect(self, authorization_url: str) -> None:
        async with self.web.http.get(authorization_url, allow_redirects=True) as r:
            page = await r.text()
        if "Sign in to RelayForge" in page:  # not signed in yet: back here afterwards
            status, page = await self.web.matrix_sign_in(await self.login_token())
            assert status == 200, page
        assert "Allow the agent" in page, page
        self.consent_page = page
        fields = {"csrf": unescape(_CSRF.search(page).group(1)),
                  "request": unescape(_REQUEST.search(page).group(1)), "decision": "allow"}
        fields.update({box: "on" for box in _BOX.findall(page) if self.keep(box)})
        async with self.web.http.post(f"{self.web.bridge_url}/auth/agent", data=fields,
                                      allow_redirects=False) as r:
            assert r.status == 303, await r.text()
            location = r.headers["Location"]
        query = parse_qs(urlparse(location).query)
        assert location.startswith(REDIRECT_URI), location
        self.result = AuthorizationCodeResult(code=query["code"][0],
                                              state=query.get("state", [None])[0])

    async def callback(self) -> AuthorizationCodeResult:
        assert self.result is not None
        return self.result


class Agent:
    """One MCP client session with OAuth; `tokens` can be inspected or tampered with."""

    def __init__(self, bridge_url: str, name: str, consenting: Consenting,
                 tokens: MemoryTokens | None = None) -> None:
        self.url = f"{bridge_url}/mcp"
        self.tokens = tokens or MemoryTokens()
        self.auth = OAuthClientProvider(
            server_url=self.url,
            client_metadata=OAuthClientMetadata(
                client_name=name, redirect_uris=[REDIRECT_URI],
                grant_types=["authorization_code", "refresh_token"],
                response_types=["code"], token_endpoint_auth_method="client_secret_post"),
            storage=self.tokens, redirect_handler=consenting.redirect,
            callback_handler=consenting.callback)
        self._stack = AsyncExitStack()
        self.client: Client | None = None

    async def __aenter__(self) -> Agent:
        http = await self._stack.enter_async_context(
            httpx2.AsyncClient(auth=self.auth, timeout=60))
        self.client = await self._stack.enter_async_context(
            Client(streamable_http_client(self.url, http_client=http)))
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self._stack.aclose()

    async def call(self, tool: str, **arguments: Any) -> tuple[bool, Any]:
        """(is_error, the structured result or the error text)."""
        assert self.client is not None
        result = await self.client.call_tool(tool, arguments)
        text = " ".join(getattr(c, "text", "") for c in result.content)
        if result.is_error:
            return True, text
        structured = result.structured_content
        if isinstance(structured, dict) and set(structured) == {"result"}:
            return False, structured["result"]
        return False, structured if structured is not None else text


class ChromiumConsenting(Consenting):
    """The same person in a real Chromium: the pages as they are, buttons clicked; the
    client's redirect URI is answered by the browser's request interception."""

    def __init__(self, page: Any, bridge_url: str, login_token: Callable[[], Awaitable[str]],
                 untick: tuple[str, ...] = (), screenshot: str | None = None) -> None:
        super().__init__(None, login_token)  # type: ignore[arg-type]
        self.page = page
        self.bridge_url = bridge_url
        self.untick = untick
        self.screenshot = screenshot

    async def redirect(self, authorization_url: str) -> None:
        landed: list[str] = []

        async def at_client(route: Any) -> None:
            landed.append(route.request.url)
            await route.fulfill(status=200, body="You can close this window.")

        await self.page.route(f"{REDIRECT_URI}**", at_client)
        await self.page.goto(authorization_url)
        if await self.page.locator("text=Sign in to RelayForge").count():
            await self.page.goto(f"{self.bridge_url}/auth/matrix?token="
                                 f"{await self.login_token()}")
            await self.page.click("#confirm-matrix-sign-in")
        await self.page.wait_for_selector("#allow")
        for box in self.untick:
            await self.page.uncheck(f'input[name="{box}"]')
        self.consent_page = await self.page.content()
        if self.screenshot:
            await self.page.screenshot(path=self.screenshot, full_page=True)
        await self.page.click("#allow")
        await self.page.wait_for_url(f"{REDIRECT_URI}**")
        query = parse_qs(urlparse(landed[-1]).query)
        self.result = AuthorizationCodeResult(code=query["code"][0],
                                              state=query.get("state", [None])[0])
