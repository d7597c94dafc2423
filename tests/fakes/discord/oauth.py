"""The fake's OAuth2: the authorisation page (the signed-in person allows at once), the token
endpoint (authorization_code with PKCE and the exact redirect URI, refresh_token with
rotation) and token revocation."""

from __future__ import annotations

import base64
import hashlib
import secrets
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import attrs
from aiohttp import web

from .models import Grant, User
from .rest import Call, DiscordError, RestApi

if TYPE_CHECKING:
    from .server import FakeDiscord


@attrs.define
class PendingCode:
    user: User
    scopes: list[str]
    redirect_uri: str
    challenge: str | None


class OAuthFlow:
    def __init__(self, fake: FakeDiscord) -> None:
        self.fake = fake
        self.signed_in: User | None = None
        self.codes: dict[str, PendingCode] = {}
        self.authorize_requests: list[dict[str, str]] = []

    async def authorize(self, request: web.Request) -> web.Response:
        query = dict(request.query)
        self.authorize_requests.append(query)
        app = self.fake.app
        if query.get("client_id") != app.client_id:
            return web.Response(status=400, text="Unknown application")
        if query.get("redirect_uri") not in app.redirect_uris:
            return web.Response(status=400, text="Invalid OAuth2 redirect_uri")
        if query.get("response_type") != "code":
            return web.Response(status=400, text="unsupported response_type")
        if self.signed_in is None:
            return web.Response(status=401, text="Sign in to Discord first")
        code = secrets.token_urlsafe(16)
        if query.get("code_challenge") and query.get("code_challenge_method") != "S256":
            return web.Response(status=400, text="only S256 challenges")
        self.codes[code] = PendingCode(self.signed_in, query.get("scope", "").split(),
                                       query["redirect_uri"], query.get("code_challenge"))
        self.fake.activity.notify()
        target = f"{query['redirect_uri']}?{urlencode({'code': code, 'state': query['state']})}"
        raise web.HTTPFound(target)

    def register(self, api: RestApi) -> None:
        api.route("POST", "/oauth2/token", self.token)
        api.route("POST", "/oauth2/token/revoke", self.revoke)

    def _client(self, call: Call) -> None:
        app = self.fake.app
        client_id, secret = call.form.get("client_id"), call.form.get("client_secret")
        if call.auth and call.auth.startswith("Basic "):
            client_id, _, secret = base64.b64decode(call.auth[6:]).decode().partition(":")
        if client_id != app.client_id or secret != app.client_secret:
            raise DiscordError(401, 0, "invalid_client")

    async def token(self, request: web.Request, call: Call) -> Any:
        self._client(call)
        grant_type = call.form.get("grant_type")
        if grant_type == "authorization_code":
            pending = self.codes.pop(call.form.get("code", ""), None)
            if pending is None or pending.redirect_uri != call.form.get("redirect_uri"):
                raise DiscordError(400, 0, "invalid_grant")
            if pending.challenge is not None:
                verifier = call.form.get("code_verifier", "")
                digest = base64.urlsafe_b64encode(
                    hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
                if digest != pending.challenge:
                    raise DiscordError(400, 0, "invalid_grant")
            grant = Grant(pending.user, pending.scopes)
            self.fake.grants.append(grant)
        elif grant_type == "refresh_token":
            grant = next((g for g in self.fake.grants if not g.revoked
                          and g.refresh_token == call.form.get("refresh_token")), None)
            if grant is None:
                raise DiscordError(400, 0, "invalid_grant")
            # Discord rotates the refresh token with every refresh.
            grant.access_token = secrets.token_urlsafe(24)
            grant.refresh_token = secrets.token_urlsafe(24)
        else:
            raise DiscordError(400, 0, "unsupported_grant_type")
        return {"access_token": grant.access_token, "token_type": "Bearer",
                "expires_in": 604800, "refresh_token": grant.refresh_token,
                "scope": " ".join(grant.scopes)}

    async def revoke(self, request: web.Request, call: Call) -> Any:
        self._client(call)
        token = call.form.get("token")
        for grant in self.fake.grants:
            if token in (grant.access_token, grant.refresh_token):
                grant.revoked = True
        return {}
