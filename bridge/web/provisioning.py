"""The provisioning API (/_matrix/provision/v1): every endpoint authenticated.

Three ways in, each as `Authorization: Bearer <token>`:
- the shared secret from the config, with `?user_id=` naming the person (trusted integrations);
- a bridge session id from signing in on the web;
- a Matrix OpenID token, checked with the homeserver (`/_matrix/federation/v1/openid/userinfo`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web

from ..core.linking import Linking
from ..core.mapping import MappingRules
from ..identity.accounts import Accounts, AccountView
from ..identity.errors import IdentityError
from ..identity.signin import SESSION_TTL, SignIn
from ..security.anomaly import NETWORK_CHANGED, SessionNetworks
from .network_endpoints import ACCOUNT, NetworkEndpoints
from .openapi import openapi_document
from .signin_routes import bearer

log = logging.getLogger("relayforge.provisioning")
PREFIX = "/_matrix/provision/v1"
_OPENID_CACHE_SECONDS = 300
# How long the network an OpenID token was first used from is remembered (the homeserver's
# tokens live about an hour).
_OPENID_BINDING_SECONDS = 24 * 3600
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, errcode: str, message: str) -> web.Response:
    return web.json_response({"errcode": errcode, "error": message}, status=status)


def account_json(view: AccountView) -> dict:
    return {
        "account_id": view.account.id, "status": view.account.status.value,
        "credits": view.account.credits, "matrix_users": view.matrix_users,
        "identities": [{"provider": i.provider_id, "issuer": i.issuer, "email": i.email,
                        "email_verified": i.email_verified} for i in view.identities],
        "profiles": [{
            "id": p.profile.id, "name": p.profile.name, "space": p.profile.space_mxid,
            "personas": [{"id": x.id, "status": x.status.value, "descriptor": x.descriptor()}
                         for x in p.personas],
        } for p in view.profiles],
    }


class ProvisioningApi(NetworkEndpoints):
    def __init__(self, accounts: Accounts, signin: SignIn, shared_secret: str | None,
                 homeserver_url: str, homeserver_domain: str,
                 session_networks: SessionNetworks | None = None) -> None:
        self.accounts = accounts
        self.session_networks = session_networks
        self.signin = signin
        self._secret = shared_secret
        self.homeserver_url = homeserver_url.rstrip("/")
        self.domain = homeserver_domain
        self._openid: dict[str, tuple[str, float]] = {}
        # Set once the bridge's Matrix side is up (the routes exist before it).
        self.linking: Linking | None = None
        self.rules: MappingRules | None = None

    def register(self, app: web.Application) -> None:
        app.router.add_get(f"{PREFIX}/openapi.json", self.openapi)
        app.router.add_get(f"{PREFIX}/whoami", self._authed(self.whoami))
        app.router.add_get(f"{PREFIX}/account", self._authed(self.account))
        app.router.add_post(f"{PREFIX}/profiles", self._authed(self.create_profile))
        app.router.add_get(f"{PREFIX}/networks", self._authed(self.networks))
        app.router.add_post(f"{PREFIX}/link/steps/{{flow_id}}", self._authed(self.link_step))
        app.router.add_get(f"{PREFIX}/link/steps/{{flow_id}}",
                           self._authed(self.link_after_oauth))
        app.router.add_post(f"{PREFIX}/link/{{network}}", self._authed(self.link_start))
        app.router.add_get(f"{PREFIX}/personas", self._authed(self.personas))
        app.router.add_delete(f"{PREFIX}/personas/{{persona_id}}", self._authed(self.unlink))
        app.router.add_post(f"{PREFIX}/personas/{{persona_id}}/{{action}}",
                            self._authed(self.persona_state))
        app.router.add_get(f"{PREFIX}/rules", self._authed(self.list_rules))
        app.router.add_post(f"{PREFIX}/rules", self._authed(self.add_rule))
        app.router.add_delete(f"{PREFIX}/rules/{{rule_id}}", self._authed(self.remove_rule))

    async def openapi(self, _: web.Request) -> web.Response:
        return web.json_response(openapi_document())

    def _authed(self, handler: Handler) -> Handler:
        async def check(request: web.Request) -> web.StreamResponse:
            token = bearer(request)
            if token is None:
                return _error(401, "M_MISSING_TOKEN", "Authorization: Bearer <token> needed")
            account, kind = await self._account_for(request, token)
            if account is None:
                return _error(401, "M_UNKNOWN_TOKEN", "Unknown or expired credentials")
            # A person's session must keep coming from where it started; the shared secret
            # is an integration's, on its own server, and is not tied to a network.
            if kind is not None and self.session_networks is not None:
                refused = await self.session_networks.check(
                    request, kind, token, account,
                    SESSION_TTL if kind == "web_session" else _OPENID_BINDING_SECONDS)
                if refused:
                    self._openid.pop(hashlib.sha256(token.encode()).hexdigest(), None)
                    return _error(401, NETWORK_CHANGED, refused)
            request[ACCOUNT] = account
            return await handler(request)

        return check

    async def _account_for(self, request: web.Request, token: str
                           ) -> tuple[str | None, str | None]:
        """The account, and the kind of session the token is (None for the shared secret)."""
        if self._secret and hmac.compare_digest(token.encode(), self._secret.encode()):
            user_id = request.query.get("user_id", "")
            if not user_id.startswith("@") or ":" not in user_id:
                return None, None
            return (await self.accounts.for_matrix_user(user_id)).id, None
        account = await self.signin.session_account(token)
        if account is not None:
            return account, "web_session"
        mxid = await self._openid_user(token)
        if mxid is None:
            return None, None
        return (await self.accounts.for_matrix_user(mxid)).id, "openid"

    async def _openid_user(self, token: str) -> str | None:
        key = hashlib.sha256(token.encode()).hexdigest()
        cached = self._openid.get(key)
        if cached and cached[1] > time.monotonic():
            return cached[0]
        url = f"{self.homeserver_url}/_matrix/federation/v1/openid/userinfo"
        try:
            async with aiohttp.ClientSession() as http, http.get(
                    url, params={"access_token": token},
                    timeout=aiohttp.ClientTimeout(total=10)) as response:
                if response.status != 200:
                    return None
                sub = (await response.json()).get("sub", "")
        except (aiohttp.ClientError, json.JSONDecodeError, TimeoutError) as e:
            log.warning("Could not check a Matrix OpenID token: %s", e)
            return None
        # Only people of our own homeserver may use the bridge this way.
        if not isinstance(sub, str) or not sub.endswith(f":{self.domain}"):
            return None
        self._openid[key] = (sub, time.monotonic() + _OPENID_CACHE_SECONDS)
        return sub

    async def whoami(self, request: web.Request) -> web.Response:
        view = await self.accounts.view(request[ACCOUNT])
        return web.json_response({"account_id": view.account.id,
                                  "matrix_users": view.matrix_users})

    async def account(self, request: web.Request) -> web.Response:
        return web.json_response(account_json(await self.accounts.view(request[ACCOUNT])))

    async def create_profile(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except json.JSONDecodeError:
            body = None
        name = body.get("name") if isinstance(body, dict) else None
        if not isinstance(name, str):
            return _error(400, "M_BAD_JSON", 'expected {"name": "..."}')
        try:
            profile = await self.accounts.create_profile(request[ACCOUNT], name,
                                                         actor=request[ACCOUNT])
        except IdentityError as e:
            return _error(400, "M_INVALID_PARAM", str(e))
        return web.json_response({"id": profile.id, "name": profile.name,
                                  "space": profile.space_mxid, "personas": []}, status=201)

