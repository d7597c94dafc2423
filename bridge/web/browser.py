"""Binding flows to one browser, and CSRF protection for the bridge's forms.

Every visitor gets a random `rf_browser` cookie (HttpOnly, SameSite=Lax). States, pending
choices and sessions are bound to its hash, so a link or state copied into another browser is
useless. Forms carry a token derived from the same cookie; a POST without the right token, or
from another origin, is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable

from aiohttp import web
from yarl import URL

BROWSER_COOKIE = "rf_browser"
SESSION_COOKIE = "rf_session"
PENDING_COOKIE = "rf_pending"
BROWSER = web.RequestKey("browser", str)
_WEB_PREFIXES = ("/oauth/", "/auth/", "/account", "/api/account/", "/admin/", "/link/")


class BrowserBinding:
    def __init__(self, csrf_key: bytes, public_url: str) -> None:
        self._key = csrf_key
        self.public_url = URL(public_url)
        self.secure = self.public_url.scheme == "https"
        # Set from the config: whether a request came over https through a trusted proxy
        # (then its cookies are Secure even when the public URL says http).
        self.forwarded_https: Callable[[web.Request], bool] = lambda _: False

    def cookie_args(self, max_age: int | None = None) -> dict:
        return {"httponly": True, "samesite": "Lax", "secure": self.secure, "path": "/",
                "max_age": max_age}

    @web.middleware
    async def middleware(self, request: web.Request,
                         handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                         ) -> web.StreamResponse:
        if not request.path.startswith(_WEB_PREFIXES) and request.path != "/":
            return await handler(request)
        raw = request.cookies.get(BROWSER_COOKIE)
        fresh = raw is None or len(raw) < 32
        if fresh:
            raw = secrets.token_urlsafe(32)
        request[BROWSER] = hashlib.sha256(raw.encode()).hexdigest()
        try:
            response = await handler(request)
        except web.HTTPException as e:
            response = e
        if fresh:
            response.set_cookie(BROWSER_COOKIE, raw, **self.cookie_args(400 * 86400))
        if not self.secure and self.forwarded_https(request):
            for morsel in response.cookies.values():
                morsel["secure"] = True
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        if isinstance(response, web.HTTPException) and response.status >= 300:
            raise response
        return response

    def csrf_token(self, request: web.Request) -> str:
        return hmac.new(self._key, f"csrf\0{request[BROWSER]}".encode(),
                        hashlib.sha256).hexdigest()

    def check_form(self, request: web.Request, form: dict) -> None:
        """Refuse a form POST from another origin or without this browser's token."""
        origin = request.headers.get("Origin")
        expected = f"{self.public_url.scheme}://{self.public_url.raw_authority}"
        if origin and origin != "null" and origin != expected:
            raise web.HTTPForbidden(text="This form was sent from another site.")
        token = form.get("csrf", "")
        if not isinstance(token, str) or not hmac.compare_digest(token,
                                                                 self.csrf_token(request)):
            raise web.HTTPForbidden(text="This form has expired or was not sent from this "
                                         "browser. Go back, reload the page and try again.")
