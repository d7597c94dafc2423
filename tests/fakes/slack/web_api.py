"""The Web API under /api/: request parsing (query, form, multipart or JSON), token checks,
scopes, rate limiting, the request log, and the account-level methods (auth, users, team,
emoji, apps.connections.open). Conversation, message and file methods live in their own
modules and register here."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import attrs
from aiohttp import web

from .models import Channel, RequestRecord, SlackError, Token, User
from .render import decode_cursor, encode_cursor, team_json, user_json

if TYPE_CHECKING:
    from .socket_mode import SocketModeHub
    from .state import SlackState

T = TypeVar("T")
Auth = Literal["user", "app", "none"]
Handler = Callable[["Call"], Awaitable[dict[str, Any]]]

# Which scope family a conversation kind needs ("channels:history", "im:read", ...).
SCOPE_FAMILY = {"public": "channels", "private": "groups", "im": "im", "mpim": "mpim"}


@attrs.define
class MethodSpec:
    handler: Handler
    auth: Auth
    scope: str | None


@attrs.define
class RateLimitRule:
    method: str | None
    retry_after: int
    remaining: int | None
    until: float | None


@attrs.define
class Hold:
    """An answer held back after the call was carried out (see WebApi.hold_after)."""

    method: str
    remaining: int
    reached: asyncio.Event = attrs.Factory(asyncio.Event)
    released: asyncio.Event = attrs.Factory(asyncio.Event)

    def release(self) -> None:
        self.released.set()


class Call:
    """One Web API call as a handler sees it."""

    def __init__(self, api: WebApi, request: web.Request, method: str, params: dict[str, Any],
                 token: Token | None) -> None:
        self.api = api
        self.state = api.state
        self.request = request
        self.method = method
        self.params = params
        self.token = token

    @property
    def user(self) -> User:
        assert self.token is not None and self.token.user is not None
        return self.token.user

    def arg(self, name: str, default: str | None = None) -> str | None:
        value = self.params.get(name)
        if value is None or value == "":
            return default
        return value if isinstance(value, str) else json.dumps(value)

    def require(self, name: str) -> str:
        value = self.arg(name)
        if value is None:
            raise SlackError("invalid_arguments",
                             response_metadata={"messages": [f"[ERROR] missing required "
                                                             f"field: {name}"]})
        return value

    def flag(self, name: str) -> bool:
        value = self.params.get(name)
        if isinstance(value, bool):
            return value
        return str(value).lower() in ("1", "true", "yes")

    def number(self, name: str, default: int) -> int:
        value = self.params.get(name)
        if value is None or value == "":
            return default
        try:
            return int(value)
        except (TypeError, ValueError):
            raise SlackError("invalid_arguments") from None

    def json_arg(self, name: str) -> Any:
        """Arrays and objects arrive as JSON strings in forms and as values in JSON bodies."""
        value = self.params.get(name)
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError:
                raise SlackError(f"invalid_{name}") from None
        return value

    def need_scope(self, scope: str) -> None:
        if self.token is None or self.token.scopes is None:
            return
        if scope not in self.token.scopes:
            raise SlackError("missing_scope", needed=scope, provided=self.token.scope_header)

    def need_conversation_scope(self, channel: Channel, verb: str) -> None:
        self.need_scope(f"{SCOPE_FAMILY[channel.kind]}:{verb}")

    def channel(self, name: str = "channel") -> Channel:
        channel_id = self.arg(name)
        if channel_id is None:
            raise SlackError("channel_not_found")
        return self.state.channel_for(self.user, channel_id)

    def teams_in_scope(self) -> list[Any]:
        """The workspaces a listing covers: an org-wide token must name one with team_id."""
        team_id = self.arg("team_id")
        if self.token is not None and self.token.enterprise_install:
            if team_id is None:
                raise SlackError("missing_argument")
            team = self.state.team_of(team_id)
            if not self.state.same_org(self.user, team):
                raise SlackError("team_access_not_granted")
            return [team]
        if team_id is not None:
            team = self.state.team_of(team_id)
            if team not in self.user.teams:
                raise SlackError("team_access_not_granted")
            return [team]
        return list(self.user.teams)

    def page(self, items: Sequence[T], *, default: int = 100, maximum: int = 1000
             ) -> tuple[list[T], str]:
        limit = self.number("limit", default) or default
        limit = min(max(limit, 1), maximum)
        try:
            offset = decode_cursor(self.arg("cursor"))
        except ValueError:
            raise SlackError("invalid_cursor") from None
        chunk = list(items[offset:offset + limit])
        more = offset + limit < len(items)
        return chunk, encode_cursor(offset + limit) if more else ""


class WebApi:
    def __init__(self, state: SlackState) -> None:
        self.state = state
        self.methods: dict[str, MethodSpec] = {}
        self.log: list[RequestRecord] = []
        self.rate_limits: list[RateLimitRule] = []
        self.holds: list[Hold] = []

    def hold_after(self, method: str, count: int) -> Hold:
        """The `count`th successful call of `method` is carried out, then its answer is held
        until `Hold.release()`: the caller's side can be killed while Slack has done it."""
        hold = Hold(method=method, remaining=count)
        self.holds.append(hold)
        return hold

    async def _maybe_hold(self, method: str) -> None:
        for hold in self.holds:
            if hold.method == method and hold.remaining > 0:
                hold.remaining -= 1
                if hold.remaining == 0:
                    hold.reached.set()
                    await hold.released.wait()

    def method(self, name: str, *, auth: Auth = "user", scope: str | None = None
               ) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.methods[name] = MethodSpec(handler=handler, auth=auth, scope=scope)
            return handler
        return register

    # ---- rate limiting ---------------------------------------------------------------------

    def rate_limit(self, method: str | None = None, retry_after: int = 1, *,
                   count: int | None = None, duration: float | None = None) -> RateLimitRule:
        """Answer 429 for `method` (None: every method) for the next `count` calls, for
        `duration` seconds, or (neither) until clear_rate_limits()."""
        rule = RateLimitRule(method=method, retry_after=retry_after, remaining=count,
                             until=self.state.now() + duration if duration is not None
                             else None)
        self.rate_limits.append(rule)
        return rule

    def _limited(self, method: str) -> int | None:
        now = self.state.now()
        self.rate_limits = [r for r in self.rate_limits
                            if (r.remaining is None or r.remaining > 0)
                            and (r.until is None or now < r.until)]
        for rule in self.rate_limits:
            if rule.method is None or rule.method == method:
                if rule.remaining is not None:
                    rule.remaining -= 1
                return rule.retry_after
        return None

    # ---- dispatch --------------------------------------------------------------------------

    async def _params(self, request: web.Request) -> dict[str, Any]:
        params: dict[str, Any] = dict(request.query)
        if request.method != "POST" or not request.can_read_body:
            return params
        if request.content_type == "application/json":
            try:
                body = await request.json()
            except ValueError:
                body = None
            if not isinstance(body, dict):
                raise SlackError("invalid_json")
            params.update(body)
        elif request.content_type in ("application/x-www-form-urlencoded",
                                      "multipart/form-data"):
            form = await request.post()
            for key, value in form.items():
                params[key] = value if isinstance(value, str) else "(file)"
        return params

    async def handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        try:
            params = await self._params(request)
        except SlackError as error:
            return web.json_response({"ok": False, "error": error.code})
        header = request.headers.get("Authorization", "")
        bearer = header[7:].strip() if header.startswith("Bearer ") else None
        form_token = params.pop("token", None)
        token_value = bearer or (form_token if isinstance(form_token, str) else None)
        record = RequestRecord(method=method, http_method=request.method, token=token_value,
                               params=params, headers=dict(request.headers),
                               at=self.state.now())
        self.log.append(record)

        retry_after = self._limited(method)
        if retry_after is not None:
            record.status, record.ok, record.error = 429, False, "ratelimited"
            self.state.activity.notify()
            return web.json_response({"ok": False, "error": "ratelimited"}, status=429,
                                     headers={"Retry-After": str(retry_after)})

        headers: dict[str, str] = {}
        spec = self.methods.get(method)
        try:
            if spec is None:
                raise SlackError("unknown_method")
            token = None
            if spec.auth != "none":
                token = self.state.check_token(token_value, kind=spec.auth)
                # Slack reports the token's scopes and the method's on every response.
                headers["X-OAuth-Scopes"] = token.scope_header
                headers["X-Accepted-OAuth-Scopes"] = spec.scope or ""
            call = Call(self, request, method, params, token)
            if spec.scope:
                call.need_scope(spec.scope)
            body: dict[str, Any] = {"ok": True, **await spec.handler(call)}
        except SlackError as error:
            body = {"ok": False, "error": error.code, **error.extra}
        record.ok = bool(body["ok"])
        record.error = body.get("error")
        self.state.activity.notify()
        if record.ok:
            await self._maybe_hold(method)
        return web.json_response(body, headers=headers)


def register_core(api: WebApi, hub: SocketModeHub) -> None:
    state = api.state

    @api.method("auth.test")
    async def auth_test(call: Call) -> dict[str, Any]:
        user = call.user
        team = user.team
        body: dict[str, Any] = {"url": f"https://{team.domain}.slack.com/", "team": team.name,
                                "user": user.name, "team_id": team.id, "user_id": user.id,
                                "is_enterprise_install": False}
        if team.enterprise is not None:
            body["enterprise_id"] = team.enterprise.id
        assert call.token is not None
        if call.token.enterprise_install and team.enterprise is not None:
            # An org-wide installation speaks for the organisation, not one workspace.
            body.update(team=team.enterprise.name, team_id=team.enterprise.id,
                        url=f"https://{team.enterprise.domain}.enterprise.slack.com/",
                        is_enterprise_install=True)
        return body

    @api.method("auth.revoke")
    async def auth_revoke(call: Call) -> dict[str, Any]:
        if call.flag("test"):
            return {"revoked": False}
        assert call.token is not None
        state.revoke(call.token)
        return {"revoked": True}

    @api.method("users.info", scope="users:read")
    async def users_info(call: Call) -> dict[str, Any]:
        user = state.user_for(call.user, call.arg("user"))
        return {"user": user_json(user, state.base_url)}

    @api.method("users.list", scope="users:read")
    async def users_list(call: Call) -> dict[str, Any]:
        teams = call.teams_in_scope()
        people = [u for u in state.users.values() if any(t in u.teams for t in teams)]
        chunk, cursor = call.page(people, default=200)
        return {"members": [user_json(u, state.base_url) for u in chunk],
                "cache_ts": int(state.now()), "response_metadata": {"next_cursor": cursor}}

    @api.method("team.info", scope="team:read")
    async def team_info(call: Call) -> dict[str, Any]:
        team = call.user.team
        if call.arg("team"):
            team = state.team_of(call.require("team"))
            if not state.same_org(call.user, team):
                raise SlackError("team_not_found")
        return {"team": team_json(team, state.base_url)}

    @api.method("emoji.list", scope="emoji:read")
    async def emoji_list(call: Call) -> dict[str, Any]:
        emoji = {name: state.base_url + value if value.startswith("/") else value
                 for name, value in call.user.team.emoji.items()}
        return {"emoji": emoji, "cache_ts": f"{int(state.now())}.000000"}

    @api.method("apps.connections.open", auth="app")
    async def connections_open(call: Call) -> dict[str, Any]:
        assert call.token is not None
        if not call.token.app.socket_mode:
            raise SlackError("socket_mode_not_enabled")
        return {"url": hub.issue_url(call.token.app)}
