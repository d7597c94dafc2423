"""The interface every network implements, and the neutral events that cross it.

A connector knows its own network and nothing of Matrix or of other networks. It reports what
happens remotely as `Remote*` events to the `BridgeSink` it is given at start, and receives what
Matrix users do as `Matrix*` events, with ids already translated to its own remote ids.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from enum import StrEnum
from typing import Any, Protocol

import attrs

from ..core.media import FetchedMedia, MediaFetcher, MediaScope
from ..security.access_tokens import RefreshFn
from ..security.impersonation import (
    Action,
    Claims,
    ImpersonationRefused,
    Target,
    TokenVerifier,
)
from .login import LinkedAccount, LoginFailed, LoginStep


class ConnectorState(StrEnum):
    STOPPED = "stopped"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    FAILED = "failed"


# ---- who and where ----------------------------------------------------------------------------

@attrs.frozen
class Attachment:
    """A file that travels with a message, in either direction."""

    name: str
    mimetype: str
    data: bytes = attrs.field(repr=False)


@attrs.frozen
class RemoteUser:
    """A user on the remote network, as the network names them."""

    remote_id: str
    display_name: str | None = None
    avatar_url: str | None = None
    # The picture itself, when the network hands it over with the user.
    avatar: Attachment | None = None


@attrs.frozen
class Workspace:
    """What a network groups rooms in (a Discord server, a Slack team): its rooms go in a
    sub-space of their profile's space named after it."""

    remote_id: str
    name: str


@attrs.frozen
class RemoteRoom:
    """A room, channel or chat on the remote network."""

    remote_id: str
    name: str | None = None
    topic: str | None = None
    # A direct chat (one-to-one or a small group chat) is one account's conversation: its
    # portal belongs to the persona whose session saw it, and only that persona answers in
    # it. Its remote id must differ per receiving account (XMPP "own jid|contact", Slack
    # "team/D..."), as two of a person's accounts talking to one contact are two chats.
    direct: bool = False
    # The workspace it is in, for networks that have them (see `Connector.workspace_of`).
    workspace: Workspace | None = None


# ---- remote -> Matrix ---------------------------------------------------------------------------

@attrs.frozen(kw_only=True)
class RemoteEvent:
    room: RemoteRoom
    sender: RemoteUser
    # The Matrix user whose linked account saw this event; invited when the portal is created.
    receiver: str | None = None
    timestamp_ms: int | None = None
    # The persona (linked account) whose session saw it, when the network has sessions.
    persona_id: str | None = None


@attrs.frozen(kw_only=True)
class RemoteMessage(RemoteEvent):
    message_id: str
    text: str
    html: str | None = None
    reply_to: str | None = None
    attachment: Attachment | None = None
    # The message that started the thread this one is in (Slack's thread_ts).
    thread_root: str | None = None
    # Matrix users mentioned (already translated by the connector), and "@room"-like
    # mentions, for `m.mentions`.
    mentions: tuple[str, ...] = ()
    mentions_room: bool = False
    # Why a file that came with this message was not brought over (too large, an address the
    # bridge may not fetch), as a sentence; the core tells the room, after the text.
    file_refused: str | None = None
    # The id the room itself gave the message, apart from the sender's `message_id` (an XMPP
    # MUC's stanza-id). Replies, reactions and retractions in that room name the message by
    # it; corrections still name `message_id`.
    room_ref: str | None = None


@attrs.frozen(kw_only=True)
class RemoteEdit(RemoteEvent):
    target_id: str
    text: str
    html: str | None = None


@attrs.frozen(kw_only=True)
class RemoteRedaction(RemoteEvent):
    target_id: str


@attrs.frozen(kw_only=True)
class RemoteReaction(RemoteEvent):
    reaction_id: str
    target_id: str
    key: str


@attrs.frozen(kw_only=True)
class RemoteTyping(RemoteEvent):
    typing: bool


@attrs.frozen(kw_only=True)
class RemoteRead(RemoteEvent):
    """The sender has read everything up to `target_id`."""

    target_id: str


@attrs.frozen(kw_only=True)
class RemoteInvite(RemoteEvent):
    """The person (`persona_id`) was invited to `room` on the network."""


@attrs.frozen(kw_only=True)
class RemoteProfile(RemoteEvent):
    """The sender's name or picture changed; their ghost should follow."""


# ---- Matrix -> remote ---------------------------------------------------------------------------

@attrs.frozen(kw_only=True)
class MatrixEvent:
    room: RemoteRoom
    # The Matrix user who acted, and the Matrix event that carried it.
    sender_mxid: str
    event_id: str
    # The impersonation token allowing this one action as the sender's persona.
    authorization: str | None = None
    # Which persona acts: set by `Connector.deliver` from the verified token, never by callers.
    persona_id: str | None = None


@attrs.frozen(kw_only=True)
class MatrixMessage(MatrixEvent):
    text: str
    html: str | None = None
    reply_to: str | None = None
    attachment: Attachment | None = None
    # The remote id of the thread's first message, when the Matrix message is in a thread.
    thread_root: str | None = None
    # When relayed (the text starts "Name: "): the sender's Matrix picture as an http(s) URL
    # anyone may fetch, for networks that show a picture per message (a Discord webhook).
    sender_avatar: str | None = None


@attrs.frozen(kw_only=True)
class MatrixEdit(MatrixEvent):
    target_id: str
    text: str
    html: str | None = None


@attrs.frozen(kw_only=True)
class MatrixRedaction(MatrixEvent):
    target_id: str
    # True when the redacted Matrix event was a reaction rather than a message.
    target_is_reaction: bool = False
    reason: str | None = None


@attrs.frozen(kw_only=True)
class MatrixReaction(MatrixEvent):
    target_id: str
    key: str


@attrs.frozen(kw_only=True)
class MatrixTyping(MatrixEvent):
    typing: bool


@attrs.frozen(kw_only=True)
class MatrixRead(MatrixEvent):
    target_id: str


@attrs.frozen
class SendResult:
    """What the remote network assigned to something the bridge sent."""

    remote_id: str
    # The id the room itself gave the message, when it gives one apart from the sender's
    # (an XMPP MUC's XEP-0359 stanza-id); see `RemoteMessage.room_ref`.
    room_ref: str | None = None


class SendRefused(Exception):
    """A send the network refused in a way the core acts on (the three kinds below); any
    other error out of a `send_*` counts as a passing failure.

    `persona_id` is attached by the core as the error travels up: the sender's own persona
    that acted, or None when the bridge relayed for them."""

    persona_id: str | None = None


class RateLimited(SendRefused):
    """The network asks the bridge to wait before sending again (HTTP 429 with Retry-After,
    or the network's own equivalent). The send is retried after `retry_after` seconds."""

    def __init__(self, retry_after: float, detail: str = "rate limited") -> None:
        super().__init__(f"{detail} (retry after {retry_after:g} s)")
        self.retry_after = retry_after


class Unsupported(SendRefused):
    """The network cannot take this at all (a reaction it has no emoji for): retrying cannot
    help, so the person is told at once."""


class CredentialsRejected(SendRefused):
    """The network refused the person's credentials (a revoked token, a changed password).
    Retrying cannot help: the persona goes read-only until the person relinks it.

    Each refusal counts once towards anomaly detection: `Connector.deliver` reports one
    a connector raises, unless the connector already did (`Connector.credentials_rejected`,
    or `reported=True` for a refusal counted when it happened, at sign-in say)."""

    def __init__(self, message: str, *, reported: bool = False) -> None:
        super().__init__(message)
        self.reported = reported


class BridgeSink(Protocol):
    """What the core offers a connector: the door for everything that happens remotely."""

    async def handle_remote_event(self, event: RemoteEvent) -> None: ...

    def ghost_mxid(self, remote_user_id: str) -> str:
        """The Matrix ID of a remote user's ghost (for mentions/pills)."""
        ...

    async def remote_user_for(self, mxid: str) -> str | None:
        """The remote user a Matrix ID stands for on this network: a ghost's remote user, or
        a Matrix user's own linked account there (for mentions); None if neither."""
        ...

    async def load_sync_state(self, persona_id: str) -> dict[str, Any] | None:
        """Where the persona's session last was in the network's update stream (what
        `save_sync_state` kept), to catch up from after a restart; None if never saved."""
        ...

    async def save_sync_state(self, persona_id: str, state: dict[str, Any]) -> None:
        """Keep the persona's update-stream cursor (JSON-able, nothing secret)."""
        ...

    async def history_gap(self, persona_id: str, remote_room_ids: list[str] | None = None
                          ) -> None:
        """The persona's session may have missed events (it reconnected): the core catches
        up its mapped rooms (or those named) through `fetch_history` (networks/history.py)."""
        ...


_ACTIONS: dict[type[MatrixEvent], Action] = {
    MatrixMessage: Action.SEND,
    MatrixEdit: Action.EDIT,
    MatrixRedaction: Action.DELETE,
    MatrixReaction: Action.REACT,
    MatrixTyping: Action.TYPING,
    MatrixRead: Action.READ,
}


class Connector(ABC):
    """One network. `core/` talks to it only through these methods."""

    #: Short lower-case network name; also the `networks.<name>` config section.
    network: str
    #: A connector that acts as people (puppeting) takes no action without an impersonation
    #: token. Only a connector that never acts as anyone may turn this off.
    requires_authorization: bool = True

    def __init__(self, settings: Mapping[str, Any] | None = None) -> None:
        """`settings` is the network's own `networks.<name>` config section."""
        self.settings = settings or {}
        self.state = ConnectorState.STOPPED
        # The core's door for everything that happens remotely, given at `start`.
        self.sink: BridgeSink | None = None
        self.verifier: TokenVerifier | None = None
        # Set by the core: called with (persona id, reason) when the network refuses a
        # person's stored credentials, so repeated refusals can stop the persona.
        self.on_auth_failure: Callable[[str, str], Awaitable[None]] | None = None
        # Set by the core: called with a sentence when the network refuses the bridge's own
        # credentials (a bot token), which only an admin can fix: every admin is told.
        self.on_bridge_problem: Callable[[str], Awaitable[None]] | None = None
        # Set by the core from `media.*`: the one fetcher for files remote events point at.
        self.media = MediaFetcher()

    def media_scope(self) -> MediaScope:
        """Where this network's credentials may go with a file download (its own hosts
        only), which configured endpoints of it may be on internal addresses, and whether
        it is https only. The default: no credentials anywhere, nothing trusted."""
        return MediaScope()

    async def fetch_media(self, url: str, credentials: Mapping[str, str] | None = None,
                          **options: Any) -> FetchedMedia:
        """Fetch a file a remote event points at, under the bridge's media rules; raises
        `MediaRefused` saying why not."""
        return await self.media.fetch(url, self.media_scope(), credentials=credentials,
                                      **options)

    async def report_auth_failure(self, persona_id: str, reason: str) -> None:
        """The network refused a linked person's credentials (signing in again, say)."""
        if self.on_auth_failure is not None:
            await self.on_auth_failure(persona_id, reason)

    async def report_bridge_problem(self, text: str) -> None:
        """Tell the bridge's admins about a problem with the network that concerns the whole
        bridge (its own credentials refused); the connector says it once, not per send."""
        if self.on_bridge_problem is not None:
            await self.on_bridge_problem(text)

    async def credentials_rejected(self, persona_id: str, reason: str) -> CredentialsRejected:
        """Report a refusal now and return the error to raise (counted once)."""
        await self.report_auth_failure(persona_id, reason)
        return CredentialsRejected(reason, reported=True)

    def workspace_of(self, channel: str) -> str:
        """The workspace a remote room belongs to (a Slack team, a Discord server, an XMPP
        MUC service), matched by people's capability rules; "" when the network has none."""
        return ""

    async def deliver(self, event: MatrixEvent) -> SendResult | None:
        """The one door from Matrix to the network: check the impersonation token, act, and
        leave an audit record naming the token. A refused token means nothing is sent."""
        claims = await self._authorize(event)
        event = attrs.evolve(event, persona_id=claims.persona if claims else None)
        try:
            return await self._act(event, claims)
        except CredentialsRejected as e:
            if not e.reported and event.persona_id is not None:
                e.reported = True
                await self.report_auth_failure(event.persona_id, str(e))
            raise

    async def _act(self, event: MatrixEvent, claims: Claims | None) -> SendResult | None:
        if isinstance(event, MatrixMessage):
            result: SendResult | None = await self.send_message(event)
        elif isinstance(event, MatrixEdit):
            await self.send_edit(event)
            result = None
        elif isinstance(event, MatrixRedaction):
            await self.send_redaction(event)
            result = None
        elif isinstance(event, MatrixReaction):
            result = await self.send_reaction(event)
        elif isinstance(event, MatrixTyping):
            await self.send_typing(event)
            return None  # signals, not messages: no audit record for each keystroke pause
        elif isinstance(event, MatrixRead):
            await self.send_read(event)
            return None
        else:
            raise TypeError(f"unknown Matrix event type {type(event).__name__}")
        if claims is not None and self.verifier is not None:
            await self.verifier.record_send(claims, result.remote_id if result else None)
        return result

    async def _authorize(self, event: MatrixEvent) -> Claims | None:
        if event.authorization is None:
            if self.requires_authorization:
                raise ImpersonationRefused(
                    f"{self.network} acts only with an impersonation token, and none was given")
            return None
        if self.verifier is None:
            raise ImpersonationRefused(f"{self.network} has no token verifier")
        return await self.verifier.verify(
            event.authorization, action=_ACTIONS[type(event)],
            target=Target(self.network, event.room.remote_id),
        )

    async def start(self, sink: BridgeSink) -> None:
        """Connect and begin reporting remote events to `sink`. A connector puts what its
        network needs in `connect`; the sink and the state are kept here."""
        self.sink = sink
        self.state = ConnectorState.CONNECTING
        try:
            await self.connect()
        except BaseException:
            self.state = ConnectorState.FAILED
            raise
        self.state = ConnectorState.CONNECTED

    async def connect(self) -> None:  # noqa: B027
        """Open what the network needs bridge-wide (a bot's gateway, a Socket Mode link);
        people's own connections open in `open_session`."""

    async def stop(self) -> None:
        """Disconnect; nothing in flight may be lost."""
        try:
            await self.disconnect()
        finally:
            self.state = ConnectorState.STOPPED

    async def disconnect(self) -> None:  # noqa: B027
        """Close what `connect` and `open_session` opened."""

    async def emit(self, event: RemoteEvent) -> None:
        """Report something that happened on the network to the core (after `start`)."""
        if self.sink is None:
            raise RuntimeError(f"the {self.network} connector is not started")
        await self.sink.handle_remote_event(event)

    def login_flows(self) -> list[str]:
        """Names of the proof-of-ownership flows this network offers (oauth, qr, password)."""
        return []

    #: Set by the core: a persona's current access token, refreshed with the given function
    #: (refresh token -> RefreshedTokens) before it expires (networks that rotate tokens).
    access_token: Callable[[str, RefreshFn], Awaitable[str]] | None = None

    #: Linking goes through the network's OAuth 2.0 authorisation page (`begin_oauth`), and
    #: the code comes back to the bridge's callback, which calls `continue_login` with
    #: {"code", "code_verifier", "redirect_uri"}.
    uses_oauth: bool = False

    #: A half-done login lives in the process that began it (a connected client waiting for
    #: a code), not only in its flow state: with several workers, the core hands each step
    #: of it to the worker that began it.
    login_in_process: bool = False

    async def begin_oauth(self, state: str, code_challenge: str, redirect_uri: str
                          ) -> LoginStep:
        """The first step of an OAuth link: the authorisation URL to open (with this state,
        this S256 PKCE challenge and exactly this redirect URI)."""
        raise LoginFailed(f"{self.network} has no OAuth login")

    def describe_scopes(self, scopes: list[str]) -> list[str]:
        """The granted scopes in words a person understands, for the consent step."""
        return scopes

    def web_routes(self) -> list[tuple[str, str, Callable[[Any], Awaitable[Any]]]]:
        """(method, path, handler) the network needs on the bridge's web listener (an
        Events API endpoint)."""
        return []

    # ---- linking and per-person sessions (networks that puppet people) --------------------

    async def begin_login(self, identifier: str | None) -> LoginStep:
        """Start proving ownership of an account on this network."""
        raise LoginFailed(f"{self.network} has no login flow")

    async def begin_login_for(self, identifier: str | None, requester: str | None
                              ) -> LoginStep:
        """Like `begin_login`, knowing the Matrix user who asks (as the homeserver proved
        it; None when unknown): a network whose accounts are Matrix accounts offers some
        logins only for that user. Others need not override it."""
        return await self.begin_login(identifier)

    async def continue_login(self, state: dict[str, Any], answers: dict[str, str]
                             ) -> LoginStep | LinkedAccount:
        """The next step, or the verified account (after a verification ping)."""
        raise LoginFailed(f"{self.network} has no login flow")

    async def open_session(self, persona_id: str, external_user_id: str,  # noqa: B027
                           credentials: dict[str, str], owner: str) -> None:
        """Connect as a linked person; events seen by this session name `owner` as
        receiver. Networks without per-person sessions need nothing here."""

    async def close_session(self, persona_id: str) -> None:  # noqa: B027
        """Disconnect a person's session (paused, unlinked, shutting down)."""

    async def revoke_access(self, external_user_id: str, credentials: dict[str, str]) -> bool:
        """Ask the network to revoke the bridge's access (an OAuth token revocation endpoint)
        before the credentials are destroyed; False where the network has no such thing
        (an XMPP password can only be changed by its owner)."""
        return False

    async def discard_login(self, credentials: dict[str, str]) -> None:  # noqa: B027
        """A verified login the person did not consent to (answered no, or never answered):
        its credentials are about to be destroyed. A network whose login created something
        that lives on there (a new device session) ends it here; the default does nothing."""

    async def join(self, persona_id: str, remote_room_id: str,
                   since_ms: int | None = None) -> RemoteRoom:
        """Join a remote room with a person's session (a mapping rule was activated).
        `since_ms`: the last time anything from this room reached Matrix; what the room
        said after that should be caught up (duplicates are dropped by the core)."""
        raise NotImplementedError(f"{self.network} cannot join rooms")

    async def find_sent(self, room: RemoteRoom, event_id: str, since_ms: int
                        ) -> SendResult | None:
        """Crash recovery: did a message sent for Matrix event `event_id` (no earlier than
        `since_ms`) reach `room`? The core asks before sending again a message whose earlier
        attempt called `send_message` without an outcome being recorded (the bridge
        crashed, or the call timed out). A connector that can tell marks each send with a
        key derived from the event id (Slack's client_msg_id, XMPP's origin-id) and looks
        it up here; None sends it again. Raise if the network cannot be asked right now:
        the core tries again later rather than risk a duplicate. The default suits networks
        that drop a repeated idempotency key themselves."""
        return None

    # What every `send_*` may raise, and what the core then does (core/delivery.py):
    #   RateLimited          - wait `retry_after` seconds and send again (not a failed try);
    #   CredentialsRejected  - the persona goes read-only until the person relinks it, and
    #                          the message waits for that;
    #   Unsupported          - the network cannot take it at all: the person is told at once;
    #   anything else        - a transient failure (a timeout, a dropped connection): retried
    #                          with backoff, looked up first with `find_sent` since the network
    #                          may have it all the same.
    # Only `deliver` calls them, after the impersonation token was checked.

    @abstractmethod
    async def send_message(self, event: MatrixMessage) -> SendResult:
        """Send a message as `event.persona_id` and return the id the network gave it.
        Raises RateLimited, CredentialsRejected, Unsupported (a file type or size it cannot
        take), or anything else for a transient failure."""

    @abstractmethod
    async def send_edit(self, event: MatrixEdit) -> None:
        """Correct the message `event.target_id`. Raises RateLimited, CredentialsRejected,
        Unsupported (the network cannot edit, or not that message), or anything else for a
        transient failure."""

    @abstractmethod
    async def send_redaction(self, event: MatrixRedaction) -> None:
        """Delete the message (or take back the reaction) `event.target_id`. Raises
        RateLimited, CredentialsRejected, Unsupported (it cannot be deleted there), or
        anything else for a transient failure."""

    @abstractmethod
    async def send_reaction(self, event: MatrixReaction) -> SendResult:
        """React to `event.target_id` with `event.key` and return the reaction's id (what a
        later redaction names). Raises RateLimited, CredentialsRejected, Unsupported (no such
        emoji there), or anything else for a transient failure."""

    async def send_typing(self, event: MatrixTyping) -> None:  # noqa: B027
        """Show (or stop showing) that the person is typing; optional. A signal is best
        effort: not queued or retried, and the person is never told of a failure."""

    async def send_read(self, event: MatrixRead) -> None:  # noqa: B027
        """Tell the network the person read up to a message; optional, best effort like
        typing."""


class OAuthFlow(Protocol):
    """A network's OAuth 2.0 authorisation-code protocol (its own module does the calls)."""

    def begin(self, state: str, code_challenge: str, redirect_uri: str) -> LoginStep: ...

    async def finish(self, answers: dict[str, str]) -> LinkedAccount: ...


class OAuthConnector(Connector):
    """A network whose accounts are linked only through its own OAuth page: the bridge's
    callback brings the code back to `continue_login`."""

    uses_oauth = True
    #: The network's name as people know it, for messages.
    label: str
    oauth: OAuthFlow

    def login_flows(self) -> list[str]:
        return ["oauth"]

    async def begin_oauth(self, state: str, code_challenge: str, redirect_uri: str
                          ) -> LoginStep:
        return self.oauth.begin(state, code_challenge, redirect_uri)

    async def continue_login(self, state: dict[str, Any], answers: dict[str, str]
                             ) -> LoginStep | LinkedAccount:
        if "code" not in answers:
            raise LoginFailed(f"{self.label} accounts are linked through {self.label}'s own "
                              f'page: start with "link {self.network}".')
        return await self.oauth.finish(answers)
