"""Slack's OAuth v2 for user tokens: the /oauth/v2/authorize page (the test says who is signed
in at the fake and whether they approve), oauth.v2.access for the code exchange, and token
rotation (grant_type=refresh_token, each refresh token usable once)."""

from __future__ import annotations

import base64
import hashlib
import html
import secrets
from typing import Any

import attrs
from aiohttp import BasicAuth, web
from yarl import URL

from .messaging import SIGN_IN_PAGE
from .models import SlackApp, SlackError, Token, User
from .state import SlackState
from .web_api import Call, WebApi

CODE_LIFETIME = 600


@attrs.define
class Grant:
    code: str
    app: SlackApp
    user: User
    scopes: list[str]
    # The redirect_uri given at authorize (None if the app's default was used).
    redirect_uri: str | None
    created: float
    challenge: str | None = None
    enterprise_install: bool = False


def _error_page(message: str) -> web.Response:
    body = ("<!DOCTYPE html><html><head><title>Slack</title></head><body>"
            f"<h1>Oops, something went wrong</h1><p>{html.escape(message)}</p></body></html>")
    return web.Response(status=400, text=body, content_type="text/html")


class OAuthFlow:
    def __init__(self, state: SlackState) -> None:
        self.state = state
        # Who is signed in to Slack in "the browser" that visits the authorize page.
        self.signed_in: User | None = None
        # False: the person clicks Cancel (redirect with error=access_denied).
        self.consent = True
        # True: the person installs the app org-wide (Enterprise Grid).
        self.enterprise_install = False
        self.codes: dict[str, Grant] = {}
        # Every authorize request's query, for assertions.
        self.authorize_requests: list[dict[str, str]] = []

    async def authorize(self, request: web.Request) -> web.Response:
        query = dict(request.query)
        self.authorize_requests.append(query)
        app = next((a for a in self.state.apps.values()
                    if a.client_id == query.get("client_id")), None)
        if app is None:
            return _error_page("Invalid client_id parameter")
        given = query.get("redirect_uri")
        if given is None:
            if not app.redirect_uris:
                return _error_page("No redirect_uri configured for this app")
            target = app.redirect_uris[0]
        elif given not in app.redirect_uris:
            # Exact match only, as this fake is configured (Slack also allows sub-paths).
            return _error_page(f"redirect_uri did not match any configured URIs. "
                               f"Passed URI: {given}")
        else:
            target = given
        if self.signed_in is None:
            return web.Response(text=SIGN_IN_PAGE, content_type="text/html")
        state_param = query.get("state", "")
        if not self.consent:
            raise web.HTTPFound(str(URL(target).update_query(error="access_denied",
                                                             state=state_param)))
        code = (f"{secrets.randbelow(10**12)}.{secrets.randbelow(10**13)}."
                f"{secrets.token_hex(32)}")
        scopes = [s for s in query.get("user_scope", "").split(",") if s]
        challenge = query.get("code_challenge")
        self.codes[code] = Grant(code=code, app=app, user=self.signed_in, scopes=scopes,
                                 redirect_uri=given, created=self.state.now(),
                                 challenge=challenge,
                                 enterprise_install=self.enterprise_install)
        raise web.HTTPFound(str(URL(target).update_query(code=code, state=state_param)))

    def _client(self, call: Call) -> SlackApp:
        header = call.request.headers.get("Authorization", "")
        if header.startswith("Basic "):
            creds = BasicAuth.decode(header)
            client_id, secret = creds.login, creds.password
        else:
            client_id, secret = call.arg("client_id"), call.arg("client_secret")
        app = next((a for a in self.state.apps.values() if a.client_id == client_id), None)
        if app is None:
            raise SlackError("invalid_client_id")
        if secret != app.client_secret:
            raise SlackError("bad_client_secret")
        return app

    def _installation(self, token: Token) -> dict[str, Any]:
        assert token.user is not None
        team = token.user.team
        enterprise = team.enterprise
        return {"team": None if token.enterprise_install else {"id": team.id, "name": team.name},
                "enterprise": {"id": enterprise.id, "name": enterprise.name}
                if enterprise else None,
                "is_enterprise_install": token.enterprise_install}

    def _code_exchange(self, call: Call, app: SlackApp) -> dict[str, Any]:
        grant = self.codes.pop(call.arg("code") or "", None)
        if (grant is None or grant.app is not app
                or self.state.now() - grant.created > CODE_LIFETIME):
            raise SlackError("invalid_code")
        given = call.arg("redirect_uri")
        if grant.redirect_uri is not None and given != grant.redirect_uri:
            raise SlackError("bad_redirect_uri")
        if grant.redirect_uri is None and given is not None and given not in app.redirect_uris:
            raise SlackError("bad_redirect_uri")
        if grant.challenge:
            verifier = call.arg("code_verifier") or ""
            digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
            if digest.rstrip(b"=").decode() != grant.challenge:
                raise SlackError("invalid_code_verifier")
        token = self.state.issue_token(grant.user, app, grant.scopes,
                                       enterprise_install=grant.enterprise_install)
        authed: dict[str, Any] = {"id": grant.user.id, "scope": ",".join(grant.scopes),
                                  "access_token": token.value, "token_type": "user"}
        if token.refresh_token:
            assert token.expires_at is not None
            authed.update(refresh_token=token.refresh_token,
                          expires_in=round(token.expires_at - self.state.now()))
        return {"app_id": app.id, "authed_user": authed, **self._installation(token)}

    def _refresh(self, call: Call, app: SlackApp) -> dict[str, Any]:
        value = call.arg("refresh_token") or ""
        old = self.state.refresh_tokens.get(value)
        if old is None or old.app is not app or value in self.state.used_refresh_tokens:
            raise SlackError("invalid_refresh_token")
        # Single use: the refresh token is spent; the old access token lives until it expires.
        del self.state.refresh_tokens[value]
        self.state.used_refresh_tokens.add(value)
        assert old.user is not None
        token = self.state.issue_token(old.user, app, old.scopes, rotation=True,
                                       enterprise_install=old.enterprise_install)
        assert token.expires_at is not None
        return {"app_id": app.id, "scope": token.scope_header, "token_type": "user",
                "access_token": token.value, "refresh_token": token.refresh_token,
                "expires_in": round(token.expires_at - self.state.now()),
                **self._installation(token)}

    def register(self, api: WebApi) -> None:
        @api.method("oauth.v2.access", auth="none")
        async def oauth_v2_access(call: Call) -> dict[str, Any]:
            app = self._client(call)
            grant_type = call.arg("grant_type") or "authorization_code"
            if grant_type == "authorization_code":
                return self._code_exchange(call, app)
            if grant_type == "refresh_token":
                return self._refresh(call, app)
            raise SlackError("invalid_grant_type")
