"""Wire-level fakes of Slack's and Discord's OAuth 2.0 endpoints (sign-in only).

They speak the real HTTP shapes: an authorize redirect, a token endpoint taking HTTP Basic or
form client credentials, single-use codes bound to the redirect URI and to the PKCE challenge,
and the userinfo call each network has (Slack's openid.connect.userInfo, Discord's
/users/@me). The person "at the keyboard" is set by the test before each sign-in.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from typing import Any

import attrs
from aiohttp import BasicAuth, web
from yarl import URL


@attrs.define
class FakeUser:
    id: str
    email: str
    verified: bool = True
    name: str = "Someone"


class FakeOAuthServer:
    def __init__(self, network: str, client_id: str, client_secret: str,
                 redirect_uri: str) -> None:
        assert network in ("slack", "discord")
        self.network = network
        self.client_id = client_id
        self.client_secret = client_secret
        self.redirect_uri = redirect_uri
        self.current: FakeUser | None = None
        self._codes: dict[str, dict[str, Any]] = {}
        self._tokens: dict[str, FakeUser] = {}
        self.runner: web.AppRunner | None = None
        self.url = ""

    # ---- the provider's endpoints ----------------------------------------------------------

    async def authorize(self, request: web.Request) -> web.Response:
        q = request.query
        if q.get("client_id") != self.client_id:
            return web.Response(status=400, text="invalid client_id")
        if q.get("redirect_uri") != self.redirect_uri:
            return web.Response(status=400, text="redirect_uri did not match")
        assert self.current is not None, "the test must say who signs in"
        code = secrets.token_urlsafe(16)
        self._codes[code] = {"user": self.current, "challenge": q.get("code_challenge"),
                             "redirect_uri": q["redirect_uri"]}
        target = URL(self.redirect_uri).with_query(code=code, state=q.get("state", ""))
        raise web.HTTPFound(str(target))

    def _client_ok(self, request: web.Request, form: dict) -> bool:
        header = request.headers.get("Authorization", "")
        if header.startswith("Basic "):
            creds = BasicAuth.decode(header)
            return (creds.login, creds.password) == (self.client_id, self.client_secret)
        return (form.get("client_id"), form.get("client_secret")) == (self.client_id,
                                                                      self.client_secret)

    async def token(self, request: web.Request) -> web.Response:
        form = dict(await request.post())
        if not self._client_ok(request, form):
            return self._error("invalid_client", 401)
        grant = self._codes.pop(str(form.get("code", "")), None)
        if grant is None or form.get("redirect_uri") != grant["redirect_uri"]:
            return self._error("invalid_grant")
        if grant["challenge"]:
            verifier = str(form.get("code_verifier", ""))
            digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
            if digest.rstrip(b"=").decode() != grant["challenge"]:
                return self._error("invalid_grant")
        access = secrets.token_urlsafe(24)
        self._tokens[access] = grant["user"]
        body: dict[str, Any] = {"access_token": access, "token_type": "Bearer",
                                "expires_in": 604800, "scope": "identify email"}
        if self.network == "slack":
            body["ok"] = True
        return web.json_response(body)

    def _error(self, code: str, status: int = 400) -> web.Response:
        if self.network == "slack":
            return web.json_response({"ok": False, "error": code}, status=200)
        return web.json_response({"error": code}, status=status)

    def _user(self, request: web.Request) -> FakeUser | None:
        header = request.headers.get("Authorization", "")
        return self._tokens.get(header.removeprefix("Bearer "))

    async def slack_userinfo(self, request: web.Request) -> web.Response:
        user = self._user(request)
        if user is None:
            return web.json_response({"ok": False, "error": "invalid_auth"})
        return web.json_response({"ok": True, "sub": user.id, "https://slack.com/user_id":
                                  user.id, "email": user.email,
                                  "email_verified": user.verified, "name": user.name})

    async def discord_me(self, request: web.Request) -> web.Response:
        user = self._user(request)
        if user is None:
            return web.json_response({"message": "401: Unauthorized", "code": 0}, status=401)
        return web.json_response({"id": user.id, "username": user.name, "email": user.email,
                                  "verified": user.verified})

    # ---- running ---------------------------------------------------------------------------

    def routes(self) -> web.Application:
        app = web.Application()
        if self.network == "slack":
            app.router.add_get("/openid/connect/authorize", self.authorize)
            app.router.add_post("/api/openid.connect.token", self.token)
            app.router.add_get("/api/openid.connect.userInfo", self.slack_userinfo)
        else:
            app.router.add_get("/oauth2/authorize", self.authorize)
            app.router.add_post("/api/oauth2/token", self.token)
            app.router.add_get("/api/users/@me", self.discord_me)
        return app

    async def start(self, port: int) -> None:
        self.runner = web.AppRunner(self.routes())
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self.runner:
            await self.runner.cleanup()

    def provider_config(self, trust_email: bool) -> dict[str, Any]:
        if self.network == "slack":
            return {"id": "slack", "type": "oauth2", "name": "Slack",
                    "issuer": "https://slack.com",
                    "authorize_url": f"{self.url}/openid/connect/authorize",
                    "token_url": f"{self.url}/api/openid.connect.token",
                    "userinfo_url": f"{self.url}/api/openid.connect.userInfo",
                    "userinfo_fields": {"subject": "sub", "email": "email",
                                        "email_verified": "email_verified"},
                    "client_id": self.client_id, "client_secret": self.client_secret,
                    "scopes": ["openid", "email"], "trust_email": trust_email}
        return {"id": "discord", "type": "oauth2", "name": "Discord",
                "issuer": "https://discord.com",
                "authorize_url": f"{self.url}/oauth2/authorize",
                "token_url": f"{self.url}/api/oauth2/token",
                "userinfo_url": f"{self.url}/api/users/@me",
                "userinfo_fields": {"subject": "id", "email": "email",
                                    "email_verified": "verified"},
                "client_id": self.client_id, "client_secret": self.client_secret,
                "scopes": ["identify", "email"], "trust_email": trust_email}
