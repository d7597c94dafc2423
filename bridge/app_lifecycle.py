"""The end of start-up and the stop, in order: going live (the bot's profile and device, the
outbound queue and the background work, then the homeserver's transactions), what begins
only once the bridge is ready (the networks, people's sessions and rules), and stopping it
all in the reverse order."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import ClientError
from mautrix.errors import MatrixError, MatrixRequestError

from . import __version__
from .audit.notices import HeadNotices
from .core.connector_starts import ConnectorStarts
from .core.media import MediaFetcher, MediaLimits
from .matrix.appservice import BridgeAppService
from .matrix.encryption_setup import start_encryption

if TYPE_CHECKING:
    from .app_parts import BridgeParts as Bridge

log = logging.getLogger("relayforge")
PING_TRIES = 4
PING_RETRY_SECONDS = 1.0


async def go_live(bridge: Bridge, az: BridgeAppService) -> None:
    """The bot's profile, the networks, people's sessions and the background work; then
    transactions are accepted and the homeserver is asked for what it queued."""
    cfg = bridge.config
    assert bridge.storage and bridge.security and bridge.router and bridge.delivery
    assert bridge.bot
    await wait_for_homeserver(bridge)
    await az.intent.ensure_registered()
    await az.intent.set_displayname(cfg["appservice.bot_displayname"])
    # The bot's encryption device (bridge.encryption), ready before any transaction.
    assert bridge._dispatcher is not None
    bridge.encryption = await start_encryption(
        cfg, az, bridge.storage, bridge.security.vault, bridge._dispatcher,
        bridge._dispatcher.portals, bridge.bot.is_bridge_user)
    media = MediaFetcher(MediaLimits.from_settings(cfg.get("media")))
    for connector in bridge.connectors.values():
        connector.media = media
        connector.verifier = bridge.security.verifier
        connector.on_auth_failure = bridge.security.anomalies.remote_auth_failure
        connector.on_bridge_problem = bridge._tell_admins
    # The networks start, people's sessions open and their rooms are rejoined in the
    # background: a remote server that is down or slow must not hold up the bridge
    # (sessions keep retrying); each network's outbound queue waits for its own start.
    bridge.connector_starts = ConnectorStarts(bridge.connectors, bridge.router.sink_for,
                                              bridge._tell_admins)
    bridge.delivery.network_ready = bridge.connector_starts.wait
    await bridge.delivery.start()
    if bridge.retention is not None:
        bridge.retention.start()
    if bridge.mcp is not None:
        await bridge.mcp.start(bridge.router, bridge.delivery, az.intent)
    bridge._pruning = asyncio.create_task(
        prune_periodically(bridge, cfg["database.prune_interval_seconds"]), name="prune")
    notice_room = cfg["audit.notice_room"] if cfg.get("audit.notice_room") else None
    if notice_room:
        bot = bridge.bot
        bridge._notices = HeadNotices(
            bridge.storage.audit_log, lambda text: bot.reply(notice_room, None, text),
            cfg["audit.notice_interval_minutes"] * 60,
        )
        bridge._notices.start()
    az.accepting = True
    az.ready = True
    # Makes the homeserver deliver anything queued while we were down right now, instead of
    # after its retry back-off.
    await ping_homeserver(az.ping_self)
    log.info("RelayForge %s is ready as %s", __version__, az.intent.mxid)
    # Only once ready: the networks' starts, people's sessions and their rules grow with
    # the database (thousands of personas and rules); begun earlier they would share the
    # event loop with the ping's wait and hold up ready.
    bridge._activation = asyncio.create_task(open_sessions(bridge), name="sessions")
    if bridge.spaces is not None:
        bridge.spaces.make_owed_in_background()  # spaces a stop left unmade


async def ping_homeserver(ping: Callable[[], Awaitable[int]], tries: int = PING_TRIES,
                          delay: float = PING_RETRY_SECONDS) -> bool:
    """The appservice ping, tried again a few times when the homeserver answers with a server
    error or cannot be reached: Synapse sometimes fails a ping with 502 ("AlreadyCalled",
    when the ping meets a retry of its own). A refusal (4xx) is not retried: it is the
    registration. False if it never went through (the bridge runs on; the homeserver then
    sends what it queued after its own back-off)."""
    for attempt in range(1, tries + 1):
        try:
            await ping()
            return True
        except MatrixRequestError as e:
            if e.http_status < 500:
                log.warning("The homeserver refused the appservice ping (%s %s): check the "
                            "registration is installed", e.http_status, e.message)
                return False
            why = f"{e.http_status} {e.message or e.errcode or ''}".strip()
        except (MatrixError, ClientError, OSError) as e:
            why = str(e) or type(e).__name__
        if attempt == tries:
            log.warning("The homeserver's appservice ping failed %d times (last: %s): check "
                        "the registration is installed and the homeserver can reach the "
                        "bridge's address", tries, why)
            return False
        log.info("The homeserver's appservice ping failed (%s); trying again in %g s "
                 "(%d of %d)", why, delay, attempt, tries)
        await asyncio.sleep(delay)
    return False


async def wait_for_homeserver(bridge: Bridge, attempts: int = 30) -> None:
    assert bridge.appservice is not None
    for attempt in range(1, attempts + 1):
        try:
            await bridge.appservice.intent.versions()
            return
        except (ClientError, MatrixError, OSError) as e:
            if attempt == attempts:
                raise RuntimeError(
                    f"homeserver at {bridge.config['homeserver.address']} is not answering: {e}"
                ) from e
            log.info("Waiting for the homeserver (%s)", e)
            await asyncio.sleep(min(attempt, 5))


async def open_sessions(bridge: Bridge) -> None:
    """After ready: the networks start, then people's sessions open and their rules are
    activated, then interrupted backfills resume."""
    assert bridge.sessions is not None and bridge.rules is not None
    assert bridge.connector_starts is not None
    await bridge.connector_starts.start_all()
    if bridge.direct_history is not None:
        await bridge.direct_history.hold_all()  # what the servers kept waits for the history
    try:
        await bridge.sessions.open_all()
        await bridge.rules.activate_all()
    finally:
        # Even if opening failed part-way: the held direct chats must not stay held.
        if bridge.direct_history is not None:
            await bridge.direct_history.catch_up_all()  # direct chats have no rule to rejoin
    if bridge.backfill is not None:
        await bridge.backfill.resume()  # what a crash interrupted and no rule rejoined


async def prune_periodically(bridge: Bridge, interval: float) -> None:
    """Expired one-time values (sign-in states, codes, sessions) are removed, so anonymous
    requests cannot grow the table for ever."""
    while True:
        await asyncio.sleep(interval)
        storage = bridge.storage
        if storage is None:
            return
        try:
            removed = await storage.one_time.prune()
            await storage.agents.prune()
            await storage.jtis.prune()
            if bridge.portal is not None:  # what the portal noted of ended sessions
                await bridge.portal.core.web_sessions.prune()
        except Exception:
            log.warning("Removing expired one-time values failed", exc_info=True)
            continue
        if removed:
            log.debug("Removed %d expired one-time values", removed)


async def stop(bridge: Bridge) -> None:
    """Stop taking transactions, then connectors, then the listener, then storage.
    Safe to call twice."""
    az, storage, security = bridge.appservice, bridge.storage, bridge.security
    bridge.appservice = bridge.storage = bridge.security = None
    if az:
        az.accepting = False
        az.ready = False
    if bridge._notices:
        await bridge._notices.stop()
        bridge._notices = None
    if bridge._activation and not bridge._activation.done():
        bridge._activation.cancel()
    if bridge._pruning:
        bridge._pruning.cancel()
        bridge._pruning = None
    if bridge._metrics_listener:
        await bridge._metrics_listener.stop()
        bridge._metrics_listener = None
    if bridge.retention is not None:
        await bridge.retention.stop()
    if bridge.backfill is not None:
        await bridge.backfill.stop()  # running backfills resume at the next start
    if bridge.mcp is not None:
        await bridge.mcp.stop()
        bridge.mcp = None
    if bridge.spaces is not None:
        await bridge.spaces.stop()  # unmade spaces stay owed in the database
    if bridge.delivery:
        await bridge.delivery.stop()  # unsent events stay queued for the next start
    for connector in bridge.connectors.values():
        try:
            await connector.stop()
        except Exception:
            log.exception("Stopping the %s connector failed", connector.network)
    if bridge.workers is not None:
        await bridge.workers.stop()  # the other workers take this one's rooms now
        bridge.workers = None
    if az:
        await az.stop()
    if bridge.encryption is not None:
        await bridge.encryption.stop()
        bridge.encryption = None
    if security:
        await security.close()
    if storage:
        await storage.close()
    if bridge._sqlite_lock is not None:
        bridge._sqlite_lock.release()
        bridge._sqlite_lock = None
