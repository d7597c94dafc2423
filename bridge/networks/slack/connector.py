"""The Slack network: people's own user tokens for everything sent, Socket Mode (or the Events
API) for everything received.

Remote ids: rooms are "TEAM/CHANNEL", people "TEAM/USER" (user ids are per workspace),
messages their `ts` (unique inside a channel), reactions "TS:USER:NAME".
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ...core.media import FetchedMedia, MediaScope, origin_of
from ...web.requests import JSON, BadRequest, content_type, decode_utf8, parse_json
from ..base import (
    ConnectorState,
    MatrixEdit,
    MatrixMessage,
    MatrixReaction,
    MatrixRedaction,
    OAuthConnector,
    RateLimited,
    RemoteRoom,
    SendResult,
    Unsupported,
)
from ..history import HistoryCursor, HistoryNotReadable, HistoryPage
from ..lazy import lazy
from ..login import LoginFailed
from ..seen import SeenIds
from .emoji import unicode_to_shortcode
from .events import SlackEvents
from .formatting import matrix_to_mrkdwn
from .oauth import SlackOAuth, async_client, describe, slack_errors
from .session import SlackSession

if TYPE_CHECKING:
    from slack_sdk import signature
    from slack_sdk.socket_mode import response as socket_response
    from slack_sdk.socket_mode.aiohttp import SocketModeClient
    from slack_sdk.socket_mode.request import SocketModeRequest

    from .history import SlackHistory
else:
    # slack-sdk is imported when the first person's session opens (Socket Mode is of no use
    # before: events for a workspace where no one is linked are dropped), the first link
    # finishes, or the first Events API request comes.
    signature = lazy("slack_sdk.signature")
    socket_response = lazy("slack_sdk.socket_mode.response")

log = logging.getLogger("relayforge.slack")

# Errors that mean the person's token is gone for good: read-only until they relink.
TOKEN_GONE = {"invalid_auth", "token_revoked", "account_inactive", "token_expired",
              "not_authed", "user_removed_from_team", "team_disabled"}
# What oauth.v2.access answers when a rotating refresh token no longer works (spent, revoked
# with the app, or the person left): the same for the person as a revoked access token.
REFRESH_GONE = TOKEN_GONE | {"invalid_refresh_token", "invalid_grant"}


#: Slack API errors that say the linked account can never read what an event is about.
_NEVER_READABLE = frozenset({"channel_not_found", "not_in_channel", "user_not_found",
                             "missing_scope"})

class SlackConnector(OAuthConnector):
    network = "slack"
    label = "Slack"

    def __init__(self, settings: dict[str, Any] | None = None) -> None:
        super().__init__(settings)
        settings = dict(self.settings)
        self.api_url = settings.get("api_url") or "https://slack.com/api/"
        settings.setdefault("oauth_url", "https://slack.com/oauth/v2/authorize")
        self.oauth = SlackOAuth(settings, self.api_url)
        self.interval = float(settings.get("min_send_interval_seconds", 1.0))
        self.sessions: dict[str, SlackSession] = {}
        self.events = SlackEvents(self)
        self._history: SlackHistory | None = None
        self._socket: SocketModeClient | None = None
        self._socket_opening = asyncio.Lock()
        self._signing_secret = settings.get("signing_secret") or None
        self._signatures: signature.SignatureVerifier | None = None
        self._inbound = settings.get("inbound") or "socket_mode"
        # One send at a time per channel, paced; what the bridge sent, to know its echoes.
        self._channel_locks: dict[str, asyncio.Lock] = {}
        self._last_send: dict[str, float] = {}
        self._sent = SeenIds(5000)

    @property
    def history(self) -> SlackHistory:
        # Its module imports slack-sdk: made when history is first read.
        if self._history is None:
            from .history import SlackHistory

            self._history = SlackHistory(self, self.events)
        return self._history

    # ---- lifecycle --------------------------------------------------------------------------

    async def _open_socket_mode(self) -> None:
        """Socket Mode, opened with the first person's session: until someone is linked,
        every event Slack would send is dropped (nobody to deliver it for)."""
        app_token = self.settings.get("app_token")
        if self._inbound != "socket_mode" or not app_token:
            return
        async with self._socket_opening:
            if self._socket is not None or self.state is ConnectorState.STOPPED:
                return
            from slack_sdk.socket_mode.aiohttp import SocketModeClient

            socket = SocketModeClient(
                app_token=app_token,
                web_client=async_client.AsyncWebClient(base_url=self.api_url),
                auto_reconnect_enabled=True)
            socket.socket_mode_request_listeners.append(self._on_socket_request)
            await socket.connect()
            self._socket = socket

    async def disconnect(self) -> None:
        async with self._socket_opening:
            if self._socket is not None:
                await self._socket.close()
                self._socket = None

    def web_routes(self) -> list[tuple[str, str, Callable[[Any], Awaitable[Any]]]]:
        return [("POST", "/slack/events", self._events_api)]

    def media_scope(self) -> MediaScope:
        # The person's token goes only to Slack's own hosts (files.slack.com for url_private)
        # and to the API endpoint the admin configured, which gets it with every call anyway;
        # never to avatar CDNs (slack-edge.com, gravatar) or anywhere an event points.
        api = origin_of(self.api_url)
        return MediaScope(credential_origins=("https://slack.com", "https://*.slack.com", api),
                          trusted_origins=(api,), https_only=api.startswith("https:"))

    # ---- linking ----------------------------------------------------------------------------

    def describe_scopes(self, scopes: list[str]) -> list[str]:
        return describe(scopes)

    async def open_session(self, persona_id: str, external_user_id: str,
                           credentials: dict[str, str], owner: str) -> None:
        team, _, user = external_user_id.partition("/")
        self.sessions[persona_id] = SlackSession(persona_id, team, user, owner, credentials)
        try:
            await self._open_socket_mode()
        except Exception:
            # The person's own calls work without it; the next session to open tries again.
            log.exception("Could not open Slack Socket Mode (networks.slack.app_token): "
                          "nothing from Slack reaches Matrix until it opens")

    async def close_session(self, persona_id: str) -> None:
        self.sessions.pop(persona_id, None)

    async def revoke_access(self, external_user_id: str, credentials: dict[str, str]) -> bool:
        try:
            if "refresh_token" in credentials:
                token = (await self.oauth.refresh(credentials["refresh_token"])).access_token
            else:
                token = credentials["access_token"]
            response = await async_client.AsyncWebClient(token=token,
                                                         base_url=self.api_url).auth_revoke()
        except slack_errors.SlackApiError as e:
            log.info("auth.revoke for %s: %s", external_user_id, e.response.get("error"))
            return False
        return bool(response.get("revoked"))

    def workspace_of(self, channel: str) -> str:
        return channel.partition("/")[0]

    # ---- calling Slack as a person ----------------------------------------------------------

    async def client(self, session: SlackSession) -> async_client.AsyncWebClient:
        if "refresh_token" in session.credentials and self.access_token is not None:
            token = await self.access_token(session.persona_id, self.oauth.refresh)
        else:
            token = session.credentials["access_token"]
        return async_client.AsyncWebClient(token=token, base_url=self.api_url)

    async def call(self, session: SlackSession, method: str, **params: Any) -> Any:
        """One Web API call as the person; Slack's refusals become what the core
        understands (wait for Retry-After; the token is gone)."""
        try:
            # Refreshing a rotating token is a call to Slack too, refused the same ways.
            client = await self.client(session)
        except slack_errors.SlackApiError as e:
            if e.response.status_code == 429:
                raise RateLimited(float(e.response.headers.get("Retry-After", 1)),
                                  "Slack rate limit on token refresh") from e
            error = e.response.get("error")
            if error in REFRESH_GONE:
                raise await self.credentials_rejected(
                    session.persona_id, f"Slack refused the token refresh ({error})") from e
            raise
        try:
            return await getattr(client, method.replace(".", "_"))(**params)
        except slack_errors.SlackApiError as e:
            if e.response.status_code == 429:
                retry_after = float(e.response.headers.get("Retry-After", 1))
                raise RateLimited(retry_after, f"Slack rate limit on {method}") from e
            error = e.response.get("error")
            if error in TOKEN_GONE:
                raise await self.credentials_rejected(
                    session.persona_id, f"Slack refused the token ({error})") from e
            raise

    def session_for(self, persona_id: str | None) -> SlackSession:
        session = self.sessions.get(persona_id or "")
        if session is None:
            raise ConnectionError("this Slack account's session is not open")
        return session

    def session_of_user(self, team: str, user: str) -> SlackSession | None:
        return next((s for s in self.sessions.values() if s.team == team and s.user == user),
                    None)

    def session_in(self, team: str) -> SlackSession | None:
        """Anyone linked in that workspace."""
        return next((s for s in self.sessions.values() if s.team == team), None)

    async def download(self, session: SlackSession, url: str) -> FetchedMedia:
        """A file or picture. Slack's private URLs need the person's token; the media
        fetcher sends it only to Slack's own hosts (`media_scope`), so a URL in an event
        pointing elsewhere never gets it. Raises MediaRefused."""
        client = await self.client(session)
        return await self.fetch_media(url, {"Authorization": f"Bearer {client.token}"})

    # ---- rooms ------------------------------------------------------------------------------

    async def join(self, persona_id: str, remote_room_id: str,
                   since_ms: int | None = None) -> RemoteRoom:
        """`TEAM/#name` or `TEAM/CHANNEL`: the channel is joined if public and not yet a
        member (`since_ms` is not used: the core catches up through `fetch_history`)."""
        session = self.session_for(persona_id)
        team, _, wanted = remote_room_id.partition("/")
        if team != session.team:
            raise LoginFailed(f"{remote_room_id} is not in your Slack workspace {session.team}"
                              f" (write it as {session.team}/#channel).")
        channel = await self._find_channel(session, wanted)
        if channel is None:
            raise LoginFailed(f"there is no channel {wanted} you can see in {team}")
        if not channel.get("is_member") and not channel.get("is_im") and not channel.get(
                "is_mpim"):
            await self.call(session, "conversations.join", channel=channel["id"])
        session.mapped.add(channel["id"])
        # What was said while the bridge was away comes through the core's backfill
        # (`fetch_history`), like a new portal's history.
        return await self.events.room(session, channel["id"])

    async def fetch_history(self, persona_id: str, room: RemoteRoom, *,
                            after: HistoryCursor | None, not_before_ms: int | None,
                            limit: int) -> HistoryPage:
        """The channel's past as the person (networks/history.py)."""
        session = self.sessions.get(persona_id)
        if session is None or not room.remote_id.startswith(f"{session.team}/"):
            raise HistoryNotReadable(f"no open Slack session of {persona_id} in that workspace")
        return await self.history.page(session, room, after=after,
                                       not_before_ms=not_before_ms, limit=limit)

    async def _find_channel(self, session: SlackSession, wanted: str) -> dict | None:
        name = wanted.removeprefix("#")
        cursor = None
        while True:
            page = await self.call(session, "conversations.list", cursor=cursor, limit=200,
                                   types="public_channel,private_channel,mpim,im",
                                   team_id=session.team)
            for channel in page.get("channels", []):
                if wanted in (channel["id"],) or channel.get("name") == name:
                    return channel
            cursor = (page.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                return None

    # ---- Matrix -> Slack --------------------------------------------------------------------

    async def _paced(self, channel: str) -> asyncio.Lock:
        lock = self._channel_locks.setdefault(channel, asyncio.Lock())
        await lock.acquire()
        wait = self._last_send.get(channel, 0) + self.interval - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)  # Slack allows about one message per second per channel
        return lock

    def _remember_sent(self, channel: str, remote_id: str) -> None:
        self._sent.add((channel, remote_id))

    def sent_by_bridge(self, channel: str, *ids: str) -> bool:
        """Whether the bridge itself sent (or did) any of these in the channel."""
        return any((channel, i) in self._sent for i in ids)

    async def settled(self, channel: str) -> None:
        """Wait until no send into the channel is in flight (its echo may be arriving)."""
        lock = self._channel_locks.get(channel)
        if lock is not None and lock.locked():
            async with lock:
                pass

    async def _mrkdwn(self, session: SlackSession, text: str, html: str | None) -> str:
        mxids = _pills(html)
        ids: dict[str, str] = {}
        assert self.sink is not None
        for mxid in mxids:
            remote = await self.sink.remote_user_for(mxid)
            if remote and remote.startswith(f"{session.team}/"):
                ids[mxid] = remote.partition("/")[2]
        return matrix_to_mrkdwn(text, html, ids.get)

    async def send_message(self, event: MatrixMessage) -> SendResult:
        session = self.session_for(event.persona_id)
        channel = event.room.remote_id.partition("/")[2]
        thread = event.thread_root or event.reply_to
        lock = await self._paced(channel)
        try:
            if event.attachment is not None:
                return await self._send_file(session, channel, event, thread)
            text = await self._mrkdwn(session, event.text, event.html)
            # The same key on every attempt, so crash recovery can find it (`find_sent`).
            response = await self.call(session, "chat.postMessage", channel=channel,
                                       text=text, thread_ts=thread,
                                       client_msg_id=client_msg_id(event.event_id))
            ts = response["ts"]
            self._remember_sent(channel, ts)
            return SendResult(ts)
        finally:
            self._last_send[channel] = time.monotonic()
            lock.release()

    async def find_sent(self, room: RemoteRoom, event_id: str, since_ms: int
                        ) -> SendResult | None:
        """A message the bridge posted carries its event's client_msg_id; look for it in the
        channel's history since `since_ms`, as any of the workspace's people who can read it.
        (Replies in threads are not in the channel's history: those are sent again.)"""
        team, _, channel = room.remote_id.partition("/")
        wanted = client_msg_id(event_id)
        readers = [s for s in self.sessions.values() if s.team == team]
        if not readers:
            raise ConnectionError(f"no Slack session of workspace {team} is open to look up "
                                  "what was sent")
        for session in readers:
            cursor = None
            try:
                while True:
                    page = await self.call(session, "conversations.history", channel=channel,
                                           oldest=f"{since_ms / 1000:.6f}", limit=200,
                                           cursor=cursor)
                    for message in page.get("messages", []):
                        if message.get("client_msg_id") == wanted:
                            self._remember_sent(channel, message["ts"])
                            return SendResult(message["ts"])
                    cursor = (page.get("response_metadata") or {}).get("next_cursor")
                    if not cursor:
                        return None
            except slack_errors.SlackApiError as e:
                if e.response.get("error") not in ("channel_not_found", "not_in_channel"):
                    raise
        raise ConnectionError(f"no Slack session can read {room.remote_id}")

    async def _send_file(self, session: SlackSession, channel: str, event: MatrixMessage,
                         thread: str | None) -> SendResult:
        attachment = event.attachment
        assert attachment is not None
        response = await self.call(session, "files_upload_v2", channel=channel,
                                   content=attachment.data, filename=attachment.name,
                                   title=attachment.name, thread_ts=thread)
        file_id = response["files"][0]["id"]
        self._remember_sent(channel, file_id)
        return SendResult(file_id)

    async def send_edit(self, event: MatrixEdit) -> None:
        session = self.session_for(event.persona_id)
        channel = event.room.remote_id.partition("/")[2]
        text = await self._mrkdwn(session, event.text, event.html)
        self._remember_sent(channel, f"edit:{event.target_id}:{text}")
        await self.call(session, "chat.update", channel=channel, ts=event.target_id, text=text)

    async def send_redaction(self, event: MatrixRedaction) -> None:
        session = self.session_for(event.persona_id)
        channel = event.room.remote_id.partition("/")[2]
        if event.target_is_reaction:
            ts, _, name = _reaction_parts(event.target_id)
            self._remember_sent(channel, f"unreact:{ts}:{session.user}:{name}")
            await self.call(session, "reactions.remove", channel=channel, timestamp=ts,
                            name=name)
        else:
            self._remember_sent(channel, f"delete:{event.target_id}")
            await self.call(session, "chat.delete", channel=channel, ts=event.target_id)

    async def send_reaction(self, event: MatrixReaction) -> SendResult:
        session = self.session_for(event.persona_id)
        channel = event.room.remote_id.partition("/")[2]
        name = unicode_to_shortcode(event.key)
        if name is None:
            raise Unsupported(f"Slack has no emoji for the reaction {event.key}")
        reaction_id = f"{event.target_id}:{session.user}:{name}"
        self._remember_sent(channel, reaction_id)
        await self.call(session, "reactions.add", channel=channel, timestamp=event.target_id,
                        name=name)
        return SendResult(reaction_id)

    # ---- Slack -> bridge --------------------------------------------------------------------

    async def _on_socket_request(self, client: SocketModeClient,
                                 request: SocketModeRequest) -> None:
        if request.type != "events_api":
            await client.send_socket_mode_response(
                socket_response.SocketModeResponse(envelope_id=request.envelope_id))
            return
        try:
            await self.events.handle(request.payload)
        except slack_errors.SlackApiError as e:
            if e.response.get("error") not in _NEVER_READABLE:
                log.exception("Slack event %s not handled", request.payload.get("event_id"))
                return
            # This persona can never read what the event is about (another person's direct
            # chat, a channel it left): a redelivery would fail the same way, and late, so
            # it is acknowledged instead of coming back after newer events.
            log.warning("Slack event %s is about something the linked account cannot read "
                        "(%s): acknowledged, not bridged", request.payload.get("event_id"),
                        e.response.get("error"))
        except Exception:
            # Not acknowledged: Slack delivers it again, and the core drops what it has seen.
            log.exception("Slack event %s not handled", request.payload.get("event_id"))
            return
        await client.send_socket_mode_response(
            socket_response.SocketModeResponse(envelope_id=request.envelope_id))

    async def _events_api(self, request: web.Request) -> web.Response:
        """The Events API: only requests signed with the app's signing secret, inside
        Slack's five-minute window (no replays), are taken."""
        if self._signing_secret is None or self._inbound != "events_api":
            return web.json_response({"error": "the Events API is not enabled"}, status=404)
        if self._signatures is None:
            self._signatures = signature.SignatureVerifier(self._signing_secret)
        body = await request.read()
        # Slack signs UTF-8 JSON (and the verifier decodes it): anything else is not Slack's.
        decode_utf8(body)
        if not self._signatures.is_valid(
                body, request.headers.get("X-Slack-Request-Timestamp", ""),
                request.headers.get("X-Slack-Signature", "")):
            log.warning("Refused a Slack Events API request with a bad or old signature")
            return web.json_response({"error": "invalid signature"}, status=401)
        # Who sent it is checked before what it says; then the one parsing layer reads it
        # (a signed body can still be malformed, and Slack expects a 4xx for that).
        content_type(request, (JSON,))
        data = parse_json(body)
        if not isinstance(data, dict):
            raise BadRequest(400, "M_BAD_JSON", "The body must be a JSON object.")
        if data.get("type") == "url_verification":
            return web.json_response({"challenge": data.get("challenge")})
        if self.sink is None:
            return web.json_response({"error": "starting"}, status=503)
        try:
            await self.events.handle(data)
        except Exception:
            log.exception("Slack event %s not handled", data.get("event_id"))
            return web.json_response({"error": "not handled"}, status=500)  # Slack retries
        return web.json_response({"ok": True})


def client_msg_id(event_id: str) -> str:
    """The client_msg_id (a UUID, as Slack's clients send) of a Matrix event's message."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"relayforge:matrix-event:{event_id}"))


def _reaction_parts(reaction_id: str) -> tuple[str, str, str]:
    ts, user, name = reaction_id.split(":", 2)
    return ts, user, name


def _pills(html: str | None) -> list[str]:
    """Matrix IDs linked as pills in formatted text."""
    if not html:
        return []
    return re.findall(r'href="https://matrix\.to/#/(@[^"?]+)', html)
