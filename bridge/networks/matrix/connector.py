"""A person's own Matrix account as a linked persona (double puppeting).

Two ways to prove it is theirs, both ending in `whoami` as that user:
- the appservice-token method (the homeserver has a second registration whose `as_token` the
  admin put into `double_puppet.secrets`): the bridge acts as the user with that token and
  `?user_id=`, no password, no device; offered only for the Matrix user who asks, never for
  an address they type;
- a client login (any other account): a password (used once for `/login`, never stored) or
  an access token, sealed in the vault.

This connector never receives or sends for portals: it links, checks and holds the logins the
Matrix side acts with (`bridge/matrix/double_puppet.py`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp
import attrs
from mautrix.api import HTTPAPI, Method, Path
from mautrix.errors import MatrixRequestError, MatrixStandardRequestError

from ..base import (
    Connector,
    MatrixEdit,
    MatrixMessage,
    MatrixReaction,
    MatrixRedaction,
    SendResult,
    Unsupported,
)
from ..login import Field, LinkedAccount, LoginFailed, LoginStep
from .info import AS_TOKEN_PREFIX

log = logging.getLogger("relayforge.matrix_persona")
_MXID = re.compile(r"^@[a-z0-9._=\-/+]+:"
                   r"([A-Za-z0-9.\-]+(:\d{1,5})?|\[[0-9A-Fa-f:.]+\](:\d{1,5})?)$")
#: The persona's scopes: where it acts (the remote accounts of every profile, or of its own).
ALL_PROFILES, THIS_PROFILE = "all_profiles", "this_profile"
_REACH_WORDS = {ALL_PROFILES: "acts for your linked accounts in all your profiles",
                THIS_PROFILE: "acts for your linked accounts in the profile it is linked into"}


@attrs.frozen
class MatrixLogin:
    """How the bridge acts as a person's Matrix user: a token for `base_url`; with
    `as_token` it is an appservice token used with `?user_id=`."""

    user_id: str
    base_url: str
    token: str = attrs.field(repr=False)
    as_token: bool


class MatrixTokenRefused(Exception):
    """The homeserver no longer takes the token (logged out, deleted, a changed secret)."""


class MatrixConnector(Connector):
    network = "matrix"

    def __init__(self, settings: Mapping[str, Any] | None = None) -> None:
        super().__init__(settings)
        self.own_domain = ""
        self.own_url = ""
        self.servers: dict[str, str] = {}
        self.secrets: dict[str, str] = {}
        self._http: aiohttp.ClientSession | None = None
        self._logins: dict[str, MatrixLogin] = {}
        # Set by the Matrix side (`DoublePuppets.attach`): a session opened (join the
        # person's rooms), and a stored token the homeserver refused (read-only).
        self.on_opened: Callable[[str], Awaitable[None]] | None = None
        self.on_refused: Callable[[str, str], Awaitable[None]] | None = None

    def configure(self, double_puppet: Mapping[str, Any], own_domain: str,
                  own_url: str) -> None:
        """The `double_puppet` section and the bridge's own homeserver."""
        self.own_domain, self.own_url = own_domain, own_url.rstrip("/")
        self.servers = {name: url.rstrip("/")
                        for name, url in (double_puppet.get("servers") or {}).items()}
        self.secrets = {name: secret[len(AS_TOKEN_PREFIX):]
                        for name, secret in (double_puppet.get("secrets") or {}).items()}

    def login_of(self, persona_id: str) -> MatrixLogin | None:
        """The open login of a persona (None while paused, revoked or never opened)."""
        return self._logins.get(persona_id)

    def delegates_for(self, mxid: str) -> bool:
        """Whether the appservice-token method can act as this user (a secret and a URL for
        their server): what linking on first contact needs."""
        server = mxid.partition(":")[2]
        return bool(server in self.secrets and self._url_of(server))

    def _url_of(self, server: str) -> str | None:
        if server in self.servers:
            return self.servers[server]
        return self.own_url if server == self.own_domain else None

    async def disconnect(self) -> None:
        self._logins.clear()
        if self._http is not None:
            await self._http.close()
            self._http = None

    def _api(self, base_url: str, token: str | None, as_user: str | None = None) -> HTTPAPI:
        if self._http is None:
            self._http = aiohttp.ClientSession()
        return HTTPAPI(base_url, token or "", client_session=self._http,
                       as_user_id=as_user, log=log)

    # ---- checks --------------------------------------------------------------------------

    async def whoami(self, login: MatrixLogin) -> str:
        """The user the login acts as, by the homeserver's word."""
        api = self._api(login.base_url, login.token, login.user_id if login.as_token else None)
        try:
            answer = await api.request(Method.GET, Path.v3.account.whoami)
        except MatrixStandardRequestError as e:
            if e.http_status in (401, 403) or e.errcode in ("M_UNKNOWN_TOKEN", "M_FORBIDDEN",
                                                             "M_MISSING_TOKEN"):
                raise MatrixTokenRefused(f"{e.errcode}: {e.message}") from e
            raise
        except MatrixRequestError as e:
            if e.http_status in (401, 403):
                raise MatrixTokenRefused(f"HTTP {e.http_status}") from e
            raise
        return str(answer.get("user_id", ""))

    async def _verified(self, login: MatrixLogin) -> str:
        try:
            who = await self.whoami(login)
        except MatrixTokenRefused as e:
            raise LoginFailed(f"The homeserver refused the bridge's access as "
                              f"{login.user_id} ({e}).") from e
        except (MatrixRequestError, aiohttp.ClientError, OSError) as e:
            raise LoginFailed(f"The homeserver of {login.user_id} did not answer ({e}).") from e
        if who != login.user_id:
            raise LoginFailed(f"That access is for {who or 'nobody'}, not {login.user_id}: "
                              "nothing was linked.")
        return who

    async def _displayname(self, login: MatrixLogin) -> str | None:
        api = self._api(login.base_url, login.token, login.user_id if login.as_token else None)
        try:
            answer = await api.request(Method.GET, Path.v3.profile[login.user_id].displayname)
        except (MatrixRequestError, aiohttp.ClientError):
            return None
        name = answer.get("displayname")
        return name if isinstance(name, str) else None

    # ---- linking -------------------------------------------------------------------------

    def login_flows(self) -> list[str]:
        return ["appservice", "password", "token"]

    def describe_scopes(self, scopes: list[str]) -> list[str]:
        words = {"appservice": "acts as you with the homeserver's double-puppeting "
                               "registration (no password, no new device)",
                 "client": "acts as you with an access token of your account",
                 **_REACH_WORDS}
        return [words.get(scope, scope) for scope in scopes]

    async def begin_login(self, identifier: str | None) -> LoginStep:
        return await self.begin_login_for(identifier, None)

    async def begin_login_for(self, identifier: str | None, requester: str | None
                              ) -> LoginStep:
        user = (identifier or requester or "").strip()
        if not user:
            raise LoginFailed("Say which Matrix account: link matrix @you:example.org")
        match = _MXID.match(user)
        if match is None:
            raise LoginFailed(f'"{user}" is not a Matrix user ID such as @you:example.org.')
        server = match.group(1)
        # The appservice method acts as anyone on the server: only ever for the person the
        # homeserver says is asking, never for an address someone typed for another.
        if user == requester and server in self.secrets and self._url_of(server):
            method = "appservice"
            how = "with the homeserver's double-puppeting registration (no password needed)"
        else:
            if self._url_of(server) is None:
                raise LoginFailed(
                    f"This bridge does not know the homeserver of {server}: the admin can add "
                    f"it to double_puppet.servers.")
            method = "client"
            how = "with a client login (your password, used once, or an access token)"
        return LoginStep(
            message=(f"Link your Matrix account {user} {how}: your messages from other "
                     "networks will then appear as you, not as a ghost. Should it act for "
                     "your linked accounts in all your profiles, or only in the profile it is "
                     "linked into?"),
            state={"method": method, "user": user, "server": server, "stage": "reach"},
            fields=[Field("reach", "all or profile")])

    async def continue_login(self, state: dict[str, Any], answers: dict[str, str]
                             ) -> LoginStep | LinkedAccount:
        user, server = state["user"], state["server"]
        base_url = self._url_of(server)
        if base_url is None:
            raise LoginFailed(f"This bridge no longer knows the homeserver of {server}.")
        if state["stage"] == "reach":
            reach = {"all": ALL_PROFILES, "profile": THIS_PROFILE}.get(
                answers.get("reach", "").strip().lower())
            if reach is None:
                raise LoginFailed('Answer "all" or "profile". Nothing was linked.')
            if state["method"] == "appservice":
                login = MatrixLogin(user, base_url, self.secrets[server], as_token=True)
                return await self._linked(login, {"method": "appservice"},
                                          ["appservice", reach],
                                          "the double-puppeting registration acts as "
                                          f"{user} (whoami)")
            return LoginStep(
                message=(f"Send the password of {user}, or an access token of it. A password "
                         "is used once to log in and never stored."),
                state={**state, "stage": "secret", "reach": reach},
                fields=[Field("secret", f"the password or an access token of {user}",
                              secret=True)])
        secret = answers.get("secret", "").strip()
        if not secret:
            raise LoginFailed("Nothing was sent: nothing was linked.")
        token_login = MatrixLogin(user, base_url, secret, as_token=False)
        try:
            if await self.whoami(token_login) == user:
                return await self._linked(token_login, {"method": "client",
                                                        "access_token": secret},
                                          ["client", state["reach"]],
                                          f"the access token acts as {user} (whoami)")
        except MatrixTokenRefused:
            pass  # not a token of that account: it is the password
        except (MatrixRequestError, aiohttp.ClientError, OSError) as e:
            raise LoginFailed(f"The homeserver of {user} did not answer ({e}).") from e
        token, device = await self._password_login(base_url, user, secret)
        return await self._linked(MatrixLogin(user, base_url, token, as_token=False),
                                  {"method": "client", "access_token": token,
                                   "device_id": device, "own_device": "yes"},
                                  ["client", state["reach"]],
                                  f"logged in as {user} with the password (device {device}); "
                                  "whoami confirms it")

    async def _password_login(self, base_url: str, user: str, password: str
                              ) -> tuple[str, str]:
        api = self._api(base_url, None)
        try:
            answer = await api.request(Method.POST, Path.v3.login, {
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": user},
                "password": password,
                "initial_device_display_name": "RelayForge (double puppet)"})
        except MatrixRequestError as e:
            if e.http_status in (400, 401, 403):
                raise LoginFailed(f"The homeserver refused that password or token for {user}. "
                                  "Nothing was linked.") from e
            raise LoginFailed(f"The homeserver of {user} did not answer ({e}).") from e
        except (aiohttp.ClientError, OSError) as e:
            raise LoginFailed(f"The homeserver of {user} did not answer ({e}).") from e
        if answer.get("user_id") != user or not answer.get("access_token"):
            raise LoginFailed(f"The homeserver logged in someone else than {user}.")
        return answer["access_token"], str(answer.get("device_id", ""))

    async def _linked(self, login: MatrixLogin, credentials: dict[str, str],
                      scopes: list[str], check: str) -> LinkedAccount:
        await self._verified(login)
        return LinkedAccount(login.user_id, await self._displayname(login), scopes,
                             {**credentials, "base_url": login.base_url}, [check])

    # ---- sessions ------------------------------------------------------------------------

    def _login_from(self, user: str, credentials: dict[str, str]) -> MatrixLogin | None:
        server = user.partition(":")[2]
        if credentials.get("method") == "appservice":
            url, secret = self._url_of(server), self.secrets.get(server)
            return MatrixLogin(user, url, secret, as_token=True) if url and secret else None
        token, url = credentials.get("access_token"), credentials.get("base_url")
        return MatrixLogin(user, url, token, as_token=False) if token and url else None

    async def open_session(self, persona_id: str, external_user_id: str,
                           credentials: dict[str, str], owner: str) -> None:
        login = self._login_from(external_user_id, credentials)
        if login is None:
            await self.refused(persona_id, "the bridge has no secret for that homeserver any "
                               "more")
            return
        try:
            await self._verified(login)
        except LoginFailed as e:
            await self.refused(persona_id, str(e))
            return
        self._logins[persona_id] = login
        if self.on_opened is not None:
            await self.on_opened(persona_id)

    async def refused(self, persona_id: str, reason: str) -> None:
        """The homeserver no longer acts for the persona: stop using it and say so."""
        self._logins.pop(persona_id, None)
        await self.report_auth_failure(persona_id, reason)
        if self.on_refused is not None:
            await self.on_refused(persona_id, reason)

    async def close_session(self, persona_id: str) -> None:
        self._logins.pop(persona_id, None)

    async def revoke_access(self, external_user_id: str, credentials: dict[str, str]) -> bool:
        """A device the bridge logged in itself is logged out; a token the person gave
        stays theirs to end, and the appservice method has nothing to revoke."""
        if credentials.get("own_device") != "yes":
            return False
        login = self._login_from(external_user_id, credentials)
        if login is None:
            return False
        await self._api(login.base_url, login.token).request(Method.POST, Path.v3.logout)
        return True

    # ---- no portals of its own -------------------------------------------------------------

    async def send_message(self, event: MatrixMessage) -> SendResult:
        raise Unsupported("Matrix accounts have no portals of their own")

    async def send_edit(self, event: MatrixEdit) -> None:
        raise Unsupported("Matrix accounts have no portals of their own")

    async def send_redaction(self, event: MatrixRedaction) -> None:
        raise Unsupported("Matrix accounts have no portals of their own")

    async def send_reaction(self, event: MatrixReaction) -> SendResult:
        raise Unsupported("Matrix accounts have no portals of their own")
