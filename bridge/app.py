"""Builds the bridge from its config, starts it and stops it. The order of start-up is
`Bridge.start` here; how the parts are connected (and every bot command) is in app_wiring,
going live, what runs after ready, and the stop in app_lifecycle."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from mautrix.types import Event

from . import app_lifecycle
from .app_parts import BridgeParts
from .app_wiring import build_matrix_side, build_people
from .compliance.residency import store_problems
from .config import ConfigError
from .core.workers import SqliteLock, Workers, WorkerSettings, sqlite_path
from .db import open_database
from .matrix.appservice import BridgeAppService
from .metrics import MetricsListener
from .networks.base import Connector
from .preflight import CONNECTOR_ENTRY_POINTS, connector_problems
from .security.setup import open_security
from .web.requests import RequestGuard
from .web.setup import build_web, register_portal, register_web_routes

log = logging.getLogger("relayforge")


def installed_connectors() -> dict[str, EntryPoint]:
    """Connectors installed as plug-ins, by network name; each is imported (with its
    network's SDK) only when its network is enabled (`EntryPoint.load`)."""
    return {ep.name: ep for ep in entry_points(group=CONNECTOR_ENTRY_POINTS)}


class Bridge(BridgeParts):
    """The bridge: its parts (app_parts) built from the config, started and stopped."""

    def _load_enabled_connectors(self) -> None:
        available = installed_connectors()
        problems = connector_problems(self.config, set(available) | set(self.connectors))
        if problems:
            raise ConfigError(problems, self.config.path)
        for network in self.config.network_names:
            if self.config[f"networks.{network}.enabled"] and network not in self.connectors:
                connector: type[Connector] = available[network].load()
                self.connectors[network] = connector(self.config[f"networks.{network}"])

    async def start(self) -> None:
        """Build everything from the config, then start it: storage and security first, the
        listener (so the homeserver can reach us), the Matrix side and the bot, then the
        networks and the background work."""
        self._load_enabled_connectors()
        if problems := store_problems(self.config):  # data residency: before anything opens
            raise ConfigError(problems, self.config.path)
        # Before anything starts: enabled without the `mcp` extra is a config problem.
        self._mcp_class = self._mcp_endpoint_class() if self.config["mcp.enabled"] else None
        if path := sqlite_path(self.config["database.uri"]):
            self._sqlite_lock = SqliteLock(path)
            self._sqlite_lock.take()  # SQLite serves one process: refuse a second one
        await self._open_storage()
        az = await self._start_listener()
        ghosts, portals, spaces = build_matrix_side(self, az.intent)
        build_people(self, az.intent, ghosts, portals, spaces)
        await app_lifecycle.go_live(self, az)

    async def _open_storage(self) -> None:
        cfg = self.config
        self.storage = await open_database(
            cfg["database.uri"], min_size=cfg["database.min_size"],
            max_size=cfg["database.max_size"],
        )
        self.workers = Workers(self.storage, WorkerSettings.from_config(cfg.get))
        await self.workers.start()  # refuses a second process where it may not run
        pruned = await self.storage.transactions.prune()
        if pruned:
            log.debug("Forgot %d old appservice transaction ids", pruned)
        await self.storage.jtis.prune()
        self.security = await open_security(cfg, self.storage)
        self.web = await build_web(cfg, self.storage, self.security, self.web_url,
                                   self.metrics)
        self.accounts, self.merges = self.web.accounts, self.web.merges

    async def _start_listener(self) -> BridgeAppService:
        """The appservice listener with every web route on it (or /metrics on its own)."""
        cfg = self.config
        assert self.storage and self.security and self.web
        az = self.appservice = BridgeAppService(
            storage=self.storage,
            metrics=self.metrics,
            # The request guard first: malformed requests are refused before a limit or a
            # handler reads them, and nothing unexpected leaves as a bare 500.
            middlewares=[RequestGuard(self.metrics).middleware, self.web.web_limits.middleware,
                         self.web.binding.middleware],
            server=cfg["homeserver.address"],
            domain=cfg["homeserver.domain"],
            verify_ssl=cfg["homeserver.verify_ssl"],
            as_token=cfg["appservice.as_token"],
            hs_token=cfg["appservice.hs_token"],
            bot_localpart=cfg["appservice.bot_username"],
            id=cfg["appservice.id"],
            ephemeral_events=cfg["appservice.ephemeral_events"],
            bridge_name="relayforge",
            log=logging.getLogger("relayforge.appservice"),
        )
        if cfg["metrics.enabled"]:
            # On a listener of its own when configured: then the public one has no /metrics.
            if cfg.get("metrics.listen"):
                self._metrics_listener = MetricsListener(self.metrics, cfg["metrics.listen"],
                                                         cfg.get("metrics.token"))
                await self._metrics_listener.start()
            else:
                az.app.router.add_get("/metrics",
                                      self.metrics.scrape_handler(cfg.get("metrics.token")))
        self.provisioning = register_web_routes(az.app, self.web, cfg)
        self.portal = register_portal(az.app, self.web, cfg)
        self._link_callbacks.register(az.app, self.web.binding, self.web.signin)
        if self._mcp_class is not None:  # people's AI agents (bridge/mcp/)
            self.mcp = self._mcp_class(cfg, self.web_url, self.storage,
                                       self.security.vault, self.security.audit, self.web)
            await self.mcp.register(az.app)
        for connector in self.connectors.values():
            for method, path, handler in connector.web_routes():
                az.app.router.add_route(method, path, handler)
        az.matrix_event_handler(self._on_matrix_event)
        await az.start(cfg["appservice.hostname"], cfg["appservice.port"])
        log.info("Listening for the homeserver on %s:%s", cfg["appservice.hostname"],
                 cfg["appservice.port"])
        return az

    def _mcp_endpoint_class(self) -> Any:
        """The MCP endpoint, from the optional `mcp` extra: refused before anything starts
        when it is not installed."""
        try:
            from .mcp.endpoint import McpEndpoint
        except ImportError as e:
            raise ConfigError([f"mcp.enabled: the MCP SDK is not installed ({e}); pip "
                               "install 'relayforge[mcp]' (or set mcp.enabled: false)"],
                              self.config.path) from e
        return McpEndpoint

    async def _on_matrix_event(self, evt: Event) -> None:
        assert self._dispatcher is not None  # transactions are refused until it exists
        await self._dispatcher.handle(evt)

    async def connectors_started(self) -> None:
        """Until every connector finished starting (they start after `start` returns)."""
        if self.connector_starts is not None:
            await self.connector_starts.wait_all()

    async def stop(self) -> None:
        """Stop taking transactions, then connectors, then the listener, then storage.
        Safe to call twice."""
        await app_lifecycle.stop(self)


async def run_until_signalled(bridge: Bridge, on_ready: Callable[[], None] | None = None) -> None:
    """Start the bridge, run until SIGINT or SIGTERM, then stop it cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await bridge.start()
        if on_ready:
            on_ready()
        await stop.wait()
    finally:
        log.info("Stopping")
        await bridge.stop()
