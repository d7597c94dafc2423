"""FakeSlack: one aiohttp server on 127.0.0.1 (a free port) playing Slack for the unmodified
slack-sdk, plus the in-process controls tests use to build a world and act in it as remote
people. Remote actions are async and return once their events are handed to the app's
transport (written to the Socket Mode socket, or POSTed and answered)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import aiohttp
from aiohttp import web
from slack_sdk.web.async_client import AsyncWebClient
from yarl import URL

from . import conversations, messaging
from .events import EventRouter
from .events_api import EventsApiDelivery
from .models import (
    Channel,
    Enterprise,
    Message,
    RequestRecord,
    SlackApp,
    SlackError,
    Team,
    Token,
    User,
)
from .oauth import OAuthFlow
from .socket_mode import SocketModeHub
from .state import Deliveries, SlackState
from .web_api import Hold, RateLimitRule, WebApi, register_core

UserRef = User | str
ChannelRef = Channel | str


class FakeSlack:
    def __init__(self) -> None:
        self.state = SlackState()
        self.socket = SocketModeHub(self.state.activity)
        self.events_http = EventsApiDelivery(self.state.apps, self.state.activity)
        self.router = EventRouter(self.state, self._deliver)
        self.state.emit = self.router.emit
        self.api = WebApi(self.state)
        register_core(self.api, self.socket)
        conversations.register(self.api)
        messaging.register(self.api)
        self.oauth = OAuthFlow(self.state)
        self.oauth.register(self.api)
        # Event callbacks for apps with neither Socket Mode nor a request URL.
        self.undelivered: list[dict[str, Any]] = []
        self.app = self.state.create_app()
        self.url = ""
        self._runner: web.AppRunner | None = None

    # ---- running ---------------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        """What to pass as AsyncWebClient(base_url=...) (the trailing slash matters)."""
        return f"{self.url}/api/"

    def web_client(self, token: str | None = None, **kwargs: Any) -> AsyncWebClient:
        return AsyncWebClient(token=token, base_url=self.api_url, **kwargs)

    async def start(self) -> FakeSlack:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("GET", "/api/{method}", self.api.handle)
        app.router.add_route("POST", "/api/{method}", self.api.handle)
        app.router.add_get("/ws", self.socket.handle)
        app.router.add_get("/oauth/v2/authorize", self.oauth.authorize)
        messaging.add_routes(app, self.state)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        self.state.base_url = self.url
        self.socket.base_ws_url = f"ws://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        await self.router.close()
        await self.socket.close()
        await self.events_http.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> FakeSlack:
        return await self.start()

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    async def _deliver(self, app: SlackApp, payload: dict[str, Any]) -> None:
        if app.socket_mode:
            await self.socket.deliver(app, payload)
        elif app.request_url:
            await self.events_http.deliver(app, payload)
        else:
            self.undelivered.append(payload)

    @staticmethod
    async def _handoff(deliveries: Deliveries) -> None:
        if deliveries:
            await asyncio.gather(*deliveries, return_exceptions=True)

    async def wait_until(self, condition: Callable[[], object], what: str) -> None:
        """Wait (up to models.DEADLINE) until `condition()` holds; it is re-checked after
        every Web API request, Socket Mode connection change or ack, and HTTP delivery."""
        await self.state.activity.until(condition, what)

    async def settle(self) -> None:
        """Wait until every event so far (Web API echoes included) reached its transport."""
        await self.router.settle()

    # ---- building the world ----------------------------------------------------------------

    def create_app(self, name: str = "Other app", **settings: Any) -> SlackApp:
        return self.state.create_app(name, **settings)

    def create_enterprise(self, name: str, domain: str | None = None) -> Enterprise:
        return self.state.create_enterprise(name, domain)

    def create_team(self, name: str, domain: str | None = None,
                    enterprise: Enterprise | None = None) -> Team:
        return self.state.create_team(name, domain, enterprise)

    def create_user(self, team: Team, name: str, **profile: Any) -> User:
        return self.state.create_user(team, name, **profile)

    def add_to_team(self, user: User, team: Team) -> None:
        """Grid people can join more workspaces of their organisation."""
        assert team.enterprise is not None and team.enterprise is user.team.enterprise
        if team not in user.teams:
            user.extra_teams.append(team)

    def create_channel(self, team: Team, name: str, members: Iterable[User] = (), *,
                       private: bool = False, **details: Any) -> Channel:
        return self.state.create_channel(team, name, members, private=private, **details)

    def open_dm(self, a: User, b: User) -> Channel:
        return self.state.open_dm(a, b)

    def open_group_dm(self, users: Sequence[User]) -> Channel:
        return self.state.open_group_dm(users)

    def add_member(self, channel: ChannelRef, user: UserRef) -> None:
        """Setup only: no events (use join_channel for a visible join)."""
        member = self._user(user)
        target = self._channel(channel)
        if member.id not in target.members:
            target.members.append(member.id)

    def issue_token(self, user: User, scopes: Iterable[str] | None = None, *,
                    app: SlackApp | None = None, rotation: bool | None = None,
                    expires_in: int = 43_200, enterprise_install: bool = False) -> str:
        """A user token, as an installation would produce; `scopes=None` allows every
        method. The token also makes the app "installed" for the user's workspace, so
        events the user can see are delivered to the app."""
        return self.state.issue_token(user, app or self.app, scopes, rotation=rotation,
                                      expires_in=expires_in,
                                      enterprise_install=enterprise_install).value

    def token(self, value: str) -> Token:
        return self.state.tokens[value]

    def refresh_token_of(self, value: str) -> str | None:
        return self.state.tokens[value].refresh_token

    async def revoke_token(self, value: str) -> None:
        """As if the person removed the app: token_revoked, and a tokens_revoked event."""
        await self._handoff(self.state.revoke(self.state.tokens[value]))

    def revoke_refresh_tokens(self, user: UserRef) -> None:
        """The person's rotating refresh tokens stop working (say, an admin signed them out
        everywhere): refreshing answers invalid_refresh_token."""
        person = self._user(user)
        for value, token in list(self.state.refresh_tokens.items()):
            if token.user is person:
                del self.state.refresh_tokens[value]

    def expire_token(self, value: str) -> None:
        self.state.tokens[value].expires_at = self.state.now() - 1

    async def deactivate_user(self, user: UserRef) -> None:
        """Their tokens then answer account_inactive; a user_change event says deleted."""
        await self._handoff(self.state.update_user(self._user(user), deleted=True))

    def advance_time(self, seconds: float) -> None:
        self.state.time_offset += seconds

    # ---- remote people acting --------------------------------------------------------------

    def _user(self, ref: UserRef) -> User:
        return ref if isinstance(ref, User) else self.state.users[ref]

    def _channel(self, ref: ChannelRef) -> Channel:
        return ref if isinstance(ref, Channel) else self.state.channels[ref]

    async def post_message(self, user: UserRef, channel: ChannelRef, text: str = "", *,
                           thread_ts: str | None = None, reply_broadcast: bool = False,
                           blocks: list[dict[str, Any]] | None = None) -> Message:
        """What the person types in a Slack client (rich_text blocks, client_msg_id)."""
        message, deliveries = self.state.post_message(
            self._user(user), self._channel(channel), text, thread_ts=thread_ts,
            reply_broadcast=reply_broadcast, blocks=blocks, from_client=True)
        await self._handoff(deliveries)
        return message

    async def edit_message(self, user: UserRef, channel: ChannelRef, ts: str, text: str
                           ) -> Message:
        message, deliveries = self.state.edit_message(self._user(user), self._channel(channel),
                                                      ts, text, from_client=True)
        await self._handoff(deliveries)
        return message

    async def delete_message(self, channel: ChannelRef, ts: str,
                             user: UserRef | None = None) -> None:
        """By its author (or `user`, who must be the author or an admin)."""
        target = self._channel(channel)
        message = target.find(ts)
        if message is None:
            raise SlackError("message_not_found")
        actor = self._user(user) if user is not None else self.state.users.get(message.user)
        await self._handoff(self.state.delete_message(actor, target, ts))

    async def add_reaction(self, user: UserRef, channel: ChannelRef, ts: str, name: str
                           ) -> None:
        await self._handoff(self.state.react(self._user(user), self._channel(channel), ts,
                                             name, add=True))

    async def remove_reaction(self, user: UserRef, channel: ChannelRef, ts: str, name: str
                              ) -> None:
        await self._handoff(self.state.react(self._user(user), self._channel(channel), ts,
                                             name, add=False))

    async def upload_file(self, user: UserRef, channel: ChannelRef, name: str, data: bytes,
                          *, comment: str = "", thread_ts: str | None = None,
                          title: str | None = None, moved_to: str | None = None) -> Message:
        """A file shared from a Slack client: a file_share message carrying `files`.
        `moved_to`: its download answers with a redirect there."""
        person = self._user(user)
        file = messaging.new_file(self.state, person, name, len(data))
        file.data = data
        file.title = title or name
        file.moved_to = moved_to
        message, deliveries = self.state.post_message(
            person, self._channel(channel), comment, thread_ts=thread_ts, files=[file],
            from_client=bool(comment))
        await self._handoff(deliveries)
        return message

    async def join_channel(self, user: UserRef, channel: ChannelRef) -> None:
        _, deliveries = self.state.join(self._user(user), self._channel(channel))
        await self._handoff(deliveries)

    async def update_user(self, user: UserRef, **changes: Any) -> None:
        """Change profile fields (display_name, real_name, avatar=bytes, status_text, ...);
        emits user_change."""
        await self._handoff(self.state.update_user(self._user(user), **changes))

    async def emit_event(self, team: Team, event: dict[str, Any],
                         channel: ChannelRef | None = None) -> None:
        """Any other event body, routed like the built-in ones."""
        target = self._channel(channel) if channel is not None else None
        await self._handoff(self.router.emit(team, event, channel=target))

    # ---- looking at what happened ----------------------------------------------------------

    @property
    def requests(self) -> list[RequestRecord]:
        return self.api.log

    def calls(self, method: str) -> list[RequestRecord]:
        return [r for r in self.api.log if r.method == method]

    def hold_after(self, method: str, count: int) -> Hold:
        """Carry out the `count`th call of `method`, then hold its answer until released."""
        return self.api.hold_after(method, count)

    def clear_requests(self) -> None:
        self.api.log.clear()

    @property
    def sent_events(self) -> list[dict[str, Any]]:
        """Every event_callback built for an app, in order."""
        return self.router.sent

    def messages(self, channel: ChannelRef) -> list[Message]:
        return list(self._channel(channel).messages)

    def rate_limit(self, method: str | None = None, retry_after: int = 1, *,
                   count: int | None = None, duration: float | None = None) -> RateLimitRule:
        return self.api.rate_limit(method, retry_after, count=count, duration=duration)

    def clear_rate_limits(self) -> None:
        self.api.rate_limits.clear()

    # ---- OAuth -----------------------------------------------------------------------------

    def sign_in(self, user: User | None, *, consent: bool = True,
                enterprise_install: bool = False) -> None:
        """Who the authorize page sees as signed in, and whether they approve."""
        self.oauth.signed_in = user
        self.oauth.consent = consent
        self.oauth.enterprise_install = enterprise_install

    @property
    def authorize_endpoint(self) -> str:
        return f"{self.url}/oauth/v2/authorize"

    async def visit_authorize(self, **query: str) -> aiohttp.ClientResponse:
        """A browser opening the authorize page, without following the redirect: check
        `.status` and `.headers["Location"]`."""
        async with aiohttp.ClientSession() as http:
            url = URL(self.authorize_endpoint).with_query(query)
            async with http.get(url, allow_redirects=False) as response:
                await response.read()
                return response
