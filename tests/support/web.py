"""A browser for tests without a real one: aiohttp with its own cookie jar."""

from __future__ import annotations

import re
from html import unescape
from typing import Any

import aiohttp

from .oidc import sign_in_at_provider

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')
# Every request of the suite comes from one client network (127.0.0.1), so a test that walks
# through many pages would meet the per-network web limit (30 at once, 30 a minute) on a fast
# machine. Tests that are not about the limits use this; tests/test_rate_limits.py covers the
# limits with their defaults.
UNLIMITED_WEB = {"rate_limits": {"web": {"burst": 100000, "per_minute": 100000}}}


class Browser:
    def __init__(self, bridge_url: str) -> None:
        self.bridge_url = bridge_url
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))

    async def close(self) -> None:
        await self.http.close()

    async def provider_redirect(self, provider: str, purpose: str = "signin") -> str:
        """Where the bridge sends the browser to sign in (the provider's authorize URL)."""
        async with self.http.get(f"{self.bridge_url}/oauth/{provider}/start",
                                 params={"purpose": purpose}, allow_redirects=False) as r:
            assert r.status == 303, await r.text()
            return r.headers["Location"]

    async def callback_url(self, provider: str, login: str, purpose: str = "signin") -> str:
        start = await self.provider_redirect(provider, purpose)
        return await sign_in_at_provider(self.http, start, login, self.bridge_url)

    async def callback(self, url: str, as_json: bool = True
                       ) -> tuple[int, Any, aiohttp.ClientResponse]:
        headers = {"Accept": "application/json"} if as_json else {}
        async with self.http.get(url, headers=headers, allow_redirects=False) as r:
            body = await (r.json() if r.content_type == "application/json" else r.text())
            return r.status, body, r

    async def sign_in(self, provider: str, login: str, purpose: str = "signin"
                      ) -> tuple[int, Any]:
        status, body, _ = await self.callback(await self.callback_url(provider, login, purpose))
        return status, body

    async def get(self, path: str) -> tuple[int, str]:
        async with self.http.get(f"{self.bridge_url}{path}") as r:
            return r.status, await r.text()

    async def csrf(self, path: str) -> str:
        status, page = await self.get(path)
        assert status == 200, page
        return unescape(_CSRF.search(page).group(1))

    async def post_form(self, path: str, fields: dict[str, str]) -> tuple[int, str]:
        async with self.http.post(f"{self.bridge_url}{path}", data=fields,
                                  allow_redirects=True) as r:
            return r.status, await r.text()

    async def post_json(self, path: str, body: Any, token: str | None = None
                        ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.http.post(f"{self.bridge_url}{path}", json=body,
                                  headers=headers) as r:
            return r.status, await r.json()

    async def matrix_sign_in(self, token: str) -> tuple[int, str]:
        """Open the bot's login link and confirm on its page (the GET alone does nothing)."""
        status, page = await self.get(f"/auth/matrix?token={token}")
        if status != 200:
            return status, page
        return await self.post_form("/auth/matrix", {
            "token": token, "csrf": unescape(_CSRF.search(page).group(1))})

    async def sign_out(self) -> tuple[int, str]:
        """The sign-out button on the settings page."""
        return await self.post_form("/auth/sign-out",
                                    {"csrf": await self.csrf("/account/settings")})

    async def create_account(self, pending_id: str) -> tuple[int, str]:
        """Choose "Create new RelayForge account" on the account choice page."""
        csrf = await self.csrf(f"/auth/account-choice?session={pending_id}")
        return await self.post_form("/auth/account-choice/create",
                                    {"session": pending_id, "csrf": csrf})
