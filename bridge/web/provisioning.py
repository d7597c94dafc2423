"""The provisioning API (/_matrix/provision/v1): every endpoint authenticated.

Three ways in, each as `Authorization: Bearer <token>`:
- the shared secret from the config, with `?user_id=` naming the person (trusted integrations);
- a bridge session id from signing in on the web;
- a Matrix OpenID token, checked with the homeserver (`/_matrix/federation/v1/openid/userinfo`).

Whichever way in, the acting Matrix user needs the level `bridge.permissions` gives for the
action, the same as in the bot (`security.permissions.ACTION_LEVELS`); a refusal is 403
`M_FORBIDDEN` naming the level.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Literal

import aiohttp
from aiohttp import web

from ..compliance.my_data import PersonalData
from ..core.linking import Linking
from ..core.mapping import MappingRules
from ..db.account import Account
from ..identity.accounts import Accounts, AccountView
from ..identity.errors import IdentityError
from ..identity.signin import SESSION_TTL, SignIn
from ..security.anomaly import NETWORK_CHANGED, SessionNetworks
from ..security.permissions import Level, Permissions, is_user_id
from .network_endpoints import ACCOUNT, ACTING_USER, NetworkEndpoints
from .openapi import openapi_document
from .requests import json_object
from .signin_routes import bearer

log = logging.getLogger("relayforge.provisioning")
PREFIX = "/_matrix/provision/v1"
_OPENID_CACHE_SECONDS = 300
# How long the network an OpenID token was first used from is remembered (the homeserver's
# tokens live about an hour).
_OPENID_BINDING_SECONDS = 24 * 3600
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _Refused(Exception):
    def __init__(self, response: web.Response) -> None:
        self.response = response


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
                 session_networks: SessionNetworks | None = None,
                 permissions: Permissions | None = None) -> None:
        self.accounts = accounts
        # No rules means nobody is let in (as the bot does with an empty bridge.permissions).
        self.permissions = permissions or Permissions({})
        self.session_networks = session_networks
        self.signin = signin
        self._secret = shared_secret
        self.homeserver_url = homeserver_url.rstrip("/")
        self.domain = homeserver_domain
        self._openid: dict[str, tuple[str, float]] = {}
        # Set once the bridge's Matrix side is up (the routes exist before it).
        self.linking: Linking | None = None
        self.rules: MappingRules | None = None
        # Also set with the Matrix side: whether a local user exists on the homeserver (None:
        # it did not say), and whether an ID is the bridge's own (bot or ghost).
        self.user_exists: Callable[[str], Awaitable[bool | None]] | None = None
        self.is_bridge_user: Callable[[str], bool] = lambda _: False
        # `GET /my-data` (bridge.compliance.my_data), set with the Matrix side.
        self.personal_data: PersonalData | None = None

    def register(self, app: web.Application) -> None:
        app.router.add_get(f"{PREFIX}/openapi.json", self.openapi)
        # Each endpoint names its action; the level it needs is the bot's for that action.
        authed = self._authed
        app.router.add_get(f"{PREFIX}/whoami", authed(self.whoami, "account"))
        app.router.add_get(f"{PREFIX}/account", authed(self.account, "account"))
        app.router.add_post(f"{PREFIX}/profiles", authed(self.create_profile, "profiles"))
        app.router.add_get(f"{PREFIX}/my-data", authed(self.my_data, "my_data"))
        app.router.add_get(f"{PREFIX}/networks", authed(self.networks, "link"))
        app.router.add_post(f"{PREFIX}/link/steps/{{flow_id}}", authed(self.link_step, "link"))
        app.router.add_get(f"{PREFIX}/link/steps/{{flow_id}}",
                           authed(self.link_after_oauth, "link"))
        app.router.add_post(f"{PREFIX}/link/{{network}}", authed(self.link_start, "link"))
        app.router.add_get(f"{PREFIX}/personas", authed(self.personas, "personas"))
        app.router.add_delete(f"{PREFIX}/personas/{{persona_id}}",
                              authed(self.unlink, "personas"))
        app.router.add_post(f"{PREFIX}/personas/{{persona_id}}/{{action}}",
                            authed(self.persona_state, "personas"))
        app.router.add_get(f"{PREFIX}/rules", authed(self.list_rules, "rules"))
        app.router.add_post(f"{PREFIX}/rules", authed(self.add_rule, "map"))
        app.router.add_delete(f"{PREFIX}/rules/{{rule_id}}", authed(self.remove_rule, "rules"))

    def authed(self, handler: Handler, action: str) -> Handler:
        """An endpoint of another module behind the same credentials and levels."""
        return self._authed(handler, action)

    async def openapi(self, _: web.Request) -> web.Response:
        return web.json_response(openapi_document())

    def _authed(self, handler: Handler, action: str) -> Handler:
        async def check(request: web.Request) -> web.StreamResponse:
            token = bearer(request)
            if token is None:
                return _error(401, "M_MISSING_TOKEN", "Authorization: Bearer <token> needed")
            try:
                account, kind, acting = await self._account_for(request, token, action)
            except _Refused as refused:
                return refused.response
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
            if kind == "web_session":
                users = await self.accounts.storage.accounts.matrix_users(account)
                mxid, level = self.permissions.best_of(users)
                try:
                    self._allow(action, mxid, level)
                except _Refused as e:
                    return e.response
                acting = mxid or account
            request[ACCOUNT] = account
            request[ACTING_USER] = acting
            return await handler(request)

        return check

    def _allow(self, action: str, mxid: str | None, level: Level) -> None:
        """The one permission check of the API, before any account is made or used."""
        refusal = self.permissions.refusal(action, mxid, level)
        if refusal is not None:
            raise _Refused(_error(403, "M_FORBIDDEN", refusal))

    async def _account_for(self, request: web.Request, token: str, action: str
                           ) -> tuple[str | None, str | None, str]:
        """The account, the kind of session the token is (None for the shared secret), and
        the Matrix user acting (for a web session with none, the account id)."""
        if self._secret and hmac.compare_digest(token.encode(), self._secret.encode()):
            user_id = request.query.get("user_id", "")
            if not user_id:
                return None, None, ""
            # The integration names whom it acts for; only someone the bridge serves.
            if not is_user_id(user_id):
                raise _Refused(_error(403, "M_FORBIDDEN", "user_id must be a Matrix user ID "
                                      "(@name:server)."))
            level = self.permissions.level_for(user_id)
            if level == Level.NONE:
                raise _Refused(_error(403, "M_FORBIDDEN", f"{user_id} is not on a server "
                                      "bridge.permissions allows."))
            self._allow(action, user_id, level)
            return (await self._account_of(user_id)).id, None, user_id
        account = await self.signin.session_account(token)
        if account is not None:
            # Its level is checked once the session is known to come from where it started.
            return account, "web_session", ""
        mxid = await self._openid_user(token)
        if mxid is None:
            return None, None, ""
        self._allow(action, mxid, self.permissions.level_for(mxid))
        return (await self._account_of(mxid)).id, "openid", mxid

    async def _account_of(self, user_id: str) -> Account:
        """The person's account; a new one only for someone who can be a person here (so
        nothing is made for an ID the homeserver would refuse)."""
        account = await self.accounts.storage.accounts.by_mxid(user_id)
        if account is not None:
            return account
        refusal = await self._not_a_person(user_id)
        if refusal is not None:
            status, message = refusal
            raise _Refused(_error(status, "M_FORBIDDEN" if status == 403 else "M_UNKNOWN",
                                  message))
        return await self.accounts.for_matrix_user(user_id)

    async def _not_a_person(self, user_id: str) -> tuple[Literal[403, 503], str] | None:
        if self.is_bridge_user(user_id):
            return 403, f"{user_id} is one of the bridge's own users."
        server = user_id.split(":", 1)[1]
        if server != self.domain and server.lower() == self.domain.lower():
            return 403, f"The server of {user_id} is written {self.domain} here."
        if self.user_exists is None:
            return 503, "The bridge is starting; try again in a minute."
        # The profile look-up: our homeserver answers for its own users and asks the user's
        # server for anyone else's (the space invites would fail for a user who is not there).
        exists = await self.user_exists(user_id)
        if exists is None and server == self.domain:
            return 503, "The homeserver did not answer; try again in a minute."
        if exists is None:
            return 403, f"The server {server} did not confirm that {user_id} exists."
        return None if exists else (403, f"{user_id} is not a user of {server}.")

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
                if response.status >= 500:
                    raise _homeserver_silent(f"HTTP {response.status}")
                if response.status != 200:
                    return None
                sub = (await response.json()).get("sub", "")
        except (aiohttp.ClientError, TimeoutError) as e:
            # Not the token's fault: a 401 would be remembered as a refused token.
            raise _homeserver_silent(str(e) or type(e).__name__) from e
        except json.JSONDecodeError as e:
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

    async def my_data(self, request: web.Request) -> web.Response:
        """Everything the bridge holds about the person (as the bot's `my-data`)."""
        if self.personal_data is None:
            return _error(503, "M_UNKNOWN", "The bridge is starting; try again in a minute.")
        return web.json_response(await self.personal_data.export(
            request[ACCOUNT], actor=request[ACTING_USER] or request[ACCOUNT]))

    async def create_profile(self, request: web.Request) -> web.Response:
        name = (await json_object(request)).get("name")
        if not isinstance(name, str):
            return _error(400, "M_BAD_JSON", 'expected {"name": "..."}')
        try:
            profile = await self.accounts.create_profile(request[ACCOUNT], name,
                                                         actor=request[ACCOUNT])
        except IdentityError as e:
            return _error(400, "M_INVALID_PARAM", str(e))
        return web.json_response({"id": profile.id, "name": profile.name,
                                  "space": profile.space_mxid, "personas": []}, status=201)


def _homeserver_silent(why: str) -> _Refused:
    log.warning("Could not check a Matrix OpenID token: %s", why)
    return _Refused(_error(503, "M_UNKNOWN", "The homeserver did not answer the token check; "
                           "try again in a moment."))
