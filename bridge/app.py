"""Builds the bridge from its config, starts it and stops it: the whole wiring in one place."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Iterable
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from aiohttp import ClientError
from mautrix.appservice import IntentAPI
from mautrix.errors import MatrixError, MatrixRequestError, MNotFound
from mautrix.types import Event, UserID

from . import __version__
from .audit.notices import HeadNotices
from .bot.account_commands import register_account_commands
from .bot.agent_commands import register_agent_commands
from .bot.audit_commands import register_audit_commands
from .bot.bot import ManagementBot
from .bot.builtin_commands import register_builtin_commands
from .bot.dispatch import MatrixDispatcher
from .bot.first_contact import LinkOnFirstContact
from .bot.hold_commands import register_hold_commands
from .bot.network_commands import NetworkCommands
from .bot.permissions import Level, Permissions
from .bot.privacy_commands import PrivacyCommands
from .bot.security_commands import SecurityCommands
from .compliance.archive import HoldArchive
from .compliance.export import BundleWriter
from .compliance.forget import Forgetting
from .compliance.my_data import PersonalData
from .compliance.residency import Residency, store_problems
from .compliance.retention import Retention
from .config import Config, ConfigError
from .core.authority import Authority
from .core.avatars import public_media_base
from .core.backfill import Backfill, BackfillSettings
from .core.connector_starts import ConnectorStarts
from .core.delivery import Delivery, DeliverySettings
from .core.linking import Linking
from .core.mapping import MappingRules
from .core.media import MediaFetcher, MediaLimits
from .core.router import Router
from .core.sessions import PersonaSessions
from .core.workers import SqliteLock, Workers, WorkerSettings, sqlite_path, wire_workers
from .db import Storage, open_database
from .db.persona import Persona, PersonaStatus
from .identity.accounts import Accounts
from .identity.merge import Merges
from .matrix.appservice import BridgeAppService
from .matrix.double_puppet import MATRIX, DoublePuppets
from .matrix.encryption_setup import start_encryption
from .matrix.ghosts import Ghosts, GhostTemplate
from .matrix.portals import Portals
from .matrix.spaces import MatrixSpaces, PortalSpaces
from .metrics import Metrics, MetricsListener
from .networks.base import Connector
from .preflight import CONNECTOR_ENTRY_POINTS, connector_problems
from .security.capabilities import Capabilities
from .security.policy import Policy
from .security.setup import Security, open_security
from .web.link_routes import LinkCallbackRoutes, callback_path, start_path
from .web.portal import Portal
from .web.provisioning import ProvisioningApi
from .web.requests import RequestGuard
from .web.setup import WebServices, build_web, register_portal, register_web_routes

log = logging.getLogger("relayforge")


async def homeserver_has_user(intent: IntentAPI, mxid: str) -> bool | None:
    """Whether a user of our own homeserver exists (its profile is found); None when the
    homeserver did not say."""
    try:
        await intent.get_profile(UserID(mxid))
    except MNotFound:
        return False
    except MatrixRequestError as e:
        # Synapse answers an unknown local user's profile with 404 M_UNKNOWN, too.
        if e.http_status == 404:
            return False
        log.warning("Could not look up %s on the homeserver: %s", mxid, e)
        return None
    except MatrixError as e:
        log.warning("Could not look up %s on the homeserver: %s", mxid, e)
        return None
    return True


def installed_connectors() -> dict[str, EntryPoint]:
    """Connectors installed as plug-ins, by network name; each is imported (with its
    network's SDK) only when its network is enabled (`EntryPoint.load`)."""
    return {ep.name: ep for ep in entry_points(group=CONNECTOR_ENTRY_POINTS)}


class Bridge:
    def __init__(self, config: Config, connectors: Iterable[Connector] = ()) -> None:
        self.config = config
        self.connectors: dict[str, Connector] = {c.network: c for c in connectors}
        self.metrics = Metrics()
        self.storage: Storage | None = None
        self.security: Security | None = None
        self.appservice: BridgeAppService | None = None
        self.bot: ManagementBot | None = None
        self.router: Router | None = None
        self._dispatcher: MatrixDispatcher | None = None
        self._notices: HeadNotices | None = None
        self.web: WebServices | None = None
        self.portal: Portal | None = None  # the account portal's pages
        self.provisioning: ProvisioningApi | None = None
        self.accounts: Accounts | None = None
        self.merges: Merges | None = None
        self.sessions: PersonaSessions | None = None
        self.linking: Linking | None = None
        self.rules: MappingRules | None = None
        self._activation: asyncio.Task | None = None
        self.delivery: Delivery | None = None
        self.connector_starts: ConnectorStarts | None = None  # in the background
        self._link_callbacks = LinkCallbackRoutes()
        self._metrics_listener: MetricsListener | None = None
        self._pruning: asyncio.Task | None = None
        self.mcp: Any = None  # the MCP endpoint (bridge.mcp), when mcp.enabled
        self._mcp_class: Any = None
        self.encryption: Any = None  # the bot's device (bridge.matrix.crypto), when on
        self.backfill: Backfill | None = None
        self.policy: Policy | None = None
        self.capabilities: Capabilities | None = None
        self.retention: Retention | None = None  # compliance.retention_days
        self.spaces: MatrixSpaces | None = None
        self.workers: Workers | None = None  # this process among those on the database
        self._sqlite_lock: SqliteLock | None = None

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
        ghosts, portals, spaces = self._build_matrix_side(az.intent)
        self._build_people(az.intent, ghosts, portals, spaces)
        await self._go_live(az)

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

    def _build_matrix_side(self, bot_intent: IntentAPI
                           ) -> tuple[Ghosts, Portals, MatrixSpaces]:
        """Ghosts, portals and spaces; the router with who may act as whom; the bot."""
        cfg = self.config
        assert self.storage and self.security and self.accounts
        templates = {
            network: GhostTemplate(
                network,
                cfg[f"networks.{network}.username_template"],
                cfg[f"networks.{network}.displayname_template"],
                cfg["homeserver.domain"],
            )
            # A Matrix persona is a real Matrix user: it has no ghosts.
            for network in cfg.network_names if network != MATRIX
        }
        ghosts = Ghosts(bot_intent, self.storage.puppets, templates)
        portals = Portals(bot_intent, self.storage.portals, cfg["bridge.portal_cache_size"])
        self.policy = Policy(cfg.get("policy"), cfg.networks)
        self.capabilities = Capabilities(self.storage, self.security.audit, self.policy,
                                         self._workspace_of, lambda: sorted(self.connectors))
        self.router = Router(self.storage, portals, ghosts, self.connectors, self.metrics,
                             authority=Authority(self.storage, self.security.minter,
                                                 self.policy, self.capabilities),
                             public_media=public_media_base(cfg["homeserver.address"],
                                                            cfg.get("homeserver.public_url")))
        # Legal holds keep what they cover, at the router's one capture point.
        self.router.archive = HoldArchive(self.storage, self.web.holds, self.security.vault,
                                          self.security.audit, self._workspace_of)
        self.web.holds.exporter = BundleWriter(self.storage, self.web.holds, self.router.archive,
                                               self.security.vault, self.security.audit).write
        self.bot = ManagementBot(
            bot_intent, self.storage.management_rooms,
            Permissions(cfg["bridge.permissions"]), cfg["bridge.command_prefix"],
            is_bridge_user=lambda mxid: mxid == bot_intent.mxid or ghosts.is_ghost(mxid),
        )
        # The web routes exist before the bot does; give them the Matrix side now.
        spaces = self.spaces = MatrixSpaces(bot_intent, self.storage)
        self.accounts.spaces = spaces
        self.bot.after_message.append(spaces.answered)  # a new person's spaces wait for it
        portals.on_created.append(PortalSpaces(self.storage, spaces).portal_created)
        self.web.signin.notify = self.bot.tell
        return ghosts, portals, spaces

    def _build_people(self, bot_intent: IntentAPI, ghosts: Ghosts, portals: Portals,
                      spaces: MatrixSpaces) -> None:
        """What people do through the bot, the API and the pages: the outbound queue,
        sessions, linking, mapping rules, and the commands for each."""
        cfg = self.config
        assert self.storage and self.security and self.accounts and self.merges
        assert self.bot and self.router and self.web and self.provisioning
        audit = self.security.audit
        self.delivery = Delivery(self.storage, self.router, portals, self.bot, audit,
                                 self.metrics, DeliverySettings.from_config(
                                     lambda key: cfg[f"delivery.{key}"]))
        self._dispatcher = MatrixDispatcher(self.bot, self.router, portals, self.delivery,
                                            self.storage.encryption_notices, self.metrics)
        self.sessions = PersonaSessions(self.storage, self.security.vault, self.connectors,
                                        audit)
        self.linking = Linking(
            self.storage, self.accounts, self.security.vault, audit, self.connectors,
            self.sessions, mfa=self.security.mfa, policy=self.policy,
            callback_url=lambda network: self.web_url + callback_path(network),
            start_url=lambda network: self.web_url + start_path(network))
        self.linking.on_relinked.append(self.delivery.relinked)
        self._link_callbacks.linking = self.linking
        self._wire_double_puppets(ghosts, portals)
        self.rules = MappingRules(self.storage, audit, portals, self.connectors, spaces)
        if self.workers is not None:
            wire_workers(self.workers, self.delivery, self.sessions, self.rules, portals,
                         self.storage.state_store, self.security.vault)
        self.router.on_invite = self.rules.handle_invite
        self.backfill = Backfill(self.storage, self.connectors, self.router.gate,
                                 self.router.handle_remote_event, audit,
                                 BackfillSettings.from_config(cfg.get, cfg.network_names),
                                 tell=self.bot.tell)
        self.rules.backfill = self.backfill
        self.router.on_history_gap = self.backfill.history_gap
        self.provisioning.linking, self.provisioning.rules = self.linking, self.rules
        self.provisioning.is_bridge_user = self.bot.is_bridge_user
        self.provisioning.user_exists = lambda mxid: homeserver_has_user(bot_intent, mxid)
        self.accounts.on_unlink.append(self.sessions.close)
        self.accounts.on_state_change.append(self._persona_changed)
        self.accounts.before_destroy.append(self._revoke_at_network)
        if self.portal is not None:
            self.portal.attach(self.linking, self.rules, self.capabilities,
                               self._link_callbacks)
        self.bot.on_new_management_room.append(self._ensure_account)
        matrix = self.connectors.get(MATRIX)
        if matrix is not None and cfg.get("double_puppet.auto"):
            self.bot.on_new_management_room.append(LinkOnFirstContact(
                self.bot, self.storage, self.accounts, self.linking, matrix))

        commands = self.bot.commands
        register_builtin_commands(commands, self.network_status_detail)
        register_audit_commands(commands, audit)
        register_agent_commands(commands, self.storage, self.accounts, audit,
                                self.mcp and f"{self.web_url}/mcp")
        register_account_commands(commands, self.storage, self.accounts, self.merges, audit,
                                  self.web_url, self.web.signin.undo_provider_added,
                                  self.web.limits.merge_confirm, provider_names={
                                      p.id: p.config.name
                                      for p in self.web.signin.providers.values()})
        register_hold_commands(commands, self.web.holds)
        self._wire_security()
        NetworkCommands(self.bot, self.storage, self.accounts, self.linking, self.rules,
                        portals, audit, self.delivery).register()
        self._wire_privacy(portals, spaces)

    def _wire_privacy(self, portals: Portals, spaces: MatrixSpaces) -> None:
        """Data residency, retention, my-data and forget-me (bridge/compliance/)."""
        cfg = self.config
        assert self.storage and self.security and self.accounts and self.bot
        assert self.rules and self.linking and self.provisioning
        residency = Residency.from_config(cfg)
        if residency is not None:
            portals.federation = spaces.federation = {"m.federate": False}
            self.rules.refuse_network = residency.network_refusal
            self.linking.refuse_network = residency.network_refusal
            domain = cfg["homeserver.domain"]
            self.rules.refuse_room = lambda state, room: residency.room_refusal(state, room,
                                                                               domain)
        audit = self.security.audit
        personal = self.provisioning.personal_data = PersonalData(self.storage, audit)
        PrivacyCommands(self.bot, self.accounts, personal, Forgetting(
            self.storage, self.accounts, self.security.vault, audit)).register()
        if days := cfg.get("compliance.retention_days"):
            self.retention = Retention(self.storage, audit, days,
                                       cfg["compliance.retention_interval_seconds"])

    async def _go_live(self, az: BridgeAppService) -> None:
        """The bot's profile, the networks, people's sessions and the background work; then
        transactions are accepted and the homeserver is asked for what it queued."""
        cfg = self.config
        assert self.storage and self.security and self.router and self.delivery and self.bot
        await self._wait_for_homeserver()
        await az.intent.ensure_registered()
        await az.intent.set_displayname(cfg["appservice.bot_displayname"])
        # The bot's encryption device (bridge.encryption), ready before any transaction.
        assert self._dispatcher is not None
        self.encryption = await start_encryption(
            cfg, az, self.storage, self.security.vault, self._dispatcher,
            self._dispatcher.portals, self.bot.is_bridge_user)
        media = MediaFetcher(MediaLimits.from_settings(cfg.get("media")))
        for connector in self.connectors.values():
            connector.media = media
            connector.verifier = self.security.verifier
            connector.on_auth_failure = self.security.anomalies.remote_auth_failure
            connector.on_bridge_problem = self._tell_admins
        # The networks start, people's sessions open and their rooms are rejoined in the
        # background: a remote server that is down or slow must not hold up the bridge
        # (sessions keep retrying); each network's outbound queue waits for its own start.
        self.connector_starts = ConnectorStarts(self.connectors, self.router.sink_for,
                                                self._tell_admins)
        self.delivery.network_ready = self.connector_starts.wait
        await self.delivery.start()
        if self.retention is not None:
            self.retention.start()
        if self.mcp is not None:
            await self.mcp.start(self.router, self.delivery, az.intent)
        self._pruning = asyncio.create_task(
            self._prune_periodically(cfg["database.prune_interval_seconds"]), name="prune")
        notice_room = cfg["audit.notice_room"] if cfg.get("audit.notice_room") else None
        if notice_room:
            bot = self.bot
            self._notices = HeadNotices(
                self.storage.audit_log, lambda text: bot.reply(notice_room, None, text),
                cfg["audit.notice_interval_minutes"] * 60,
            )
            self._notices.start()
        az.accepting = True
        az.ready = True
        # Only now: with thousands of personas and rules, their work would otherwise share
        # the event loop with the start-up it must not slow.
        self._activation = asyncio.create_task(self._open_sessions(), name="sessions")
        if self.spaces is not None:
            self.spaces.make_owed_in_background()  # spaces a stop left unmade
        try:
            # Makes the homeserver deliver anything queued while we were down right now,
            # instead of after its retry back-off.
            await az.ping_self()
        except (MatrixError, ClientError) as e:
            log.warning("Homeserver ping failed (%s): check the registration is installed", e)
        log.info("RelayForge %s is ready as %s", __version__, az.intent.mxid)

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

    async def _persona_changed(self, persona: Persona) -> None:
        assert self.sessions is not None and self.rules is not None
        await self.sessions.follow(persona)
        if persona.status == PersonaStatus.ACTIVE:
            await self.rules.activate_all(persona)
            if self.delivery is not None:
                await self.delivery.relinked(persona.id)  # resumed: what waited goes out

    def _wire_double_puppets(self, ghosts: Ghosts, portals: Portals) -> None:
        """Where a person's Matrix persona is in use, their own Matrix user speaks for their
        remote accounts instead of their ghost; a token that stops working turns it
        read-only, like a refused send on any network."""
        assert self.appservice and self.storage and self.security and self.router
        assert self.delivery is not None
        puppets = DoublePuppets(self.appservice.intent, self.storage, self.security.audit,
                                ghosts)
        puppets.attach(self.connectors.get(MATRIX), self.config.get("double_puppet") or {},
                       self.config["homeserver.domain"], self.config["homeserver.address"])
        puppets.on_read_only = self.delivery.read_only
        self.router.own_users = puppets
        portals.on_created.append(puppets.portal_created)

    def _wire_security(self) -> None:
        """Capabilities and MFA commands; MFA before resuming a persona stopped by anomaly
        detection; anomalies stop sessions and tell the person."""
        assert self.security and self.bot and self.accounts and self.sessions
        assert self.capabilities is not None
        SecurityCommands(self.bot, self.accounts, self.capabilities,
                         self.security.mfa).register()
        self.accounts.resume_checks.append(self.security.mfa.check_resume)
        anomalies = self.security.anomalies
        anomalies.notify = self.bot.tell
        anomalies.on_stopped.append(self.sessions.follow)
        # A send refused for bad credentials is counted where the connector reports it
        # (`Connector.deliver`), once: not again when the persona turns read-only.

    async def _tell_admins(self, text: str) -> None:
        """A problem only an admin can fix (a network refused the bridge's own credentials):
        a notice to everyone at `admin` level in bridge.permissions with a management room."""
        assert self.bot and self.storage
        for mxid in await self.storage.management_rooms.users():
            if self.bot.permissions.level_for(mxid) < Level.ADMIN:
                continue
            try:
                await self.bot.tell(mxid, text)
            except MatrixError as e:
                log.warning("Could not tell admin %s: %s", mxid, e)

    def _workspace_of(self, network: str, channel: str) -> str:
        connector = self.connectors.get(network)
        return connector.workspace_of(channel) if connector else ""

    async def _revoke_at_network(self, persona: Persona) -> None:
        """Best effort: the credentials are destroyed here whatever the network answers."""
        connector = self.connectors.get(persona.platform)
        if connector is None or self.sessions is None:
            return
        try:
            credentials = await self.sessions.credentials(persona)
            revoked = await connector.revoke_access(persona.external_user_id, credentials)
        except Exception:
            log.warning("Could not revoke %s's access at %s", persona.id, persona.platform,
                        exc_info=True)
            return
        if revoked:
            log.info("%s revoked the bridge's access for persona %s", persona.platform,
                     persona.id)

    async def _prune_periodically(self, interval: float) -> None:
        """Expired one-time values (sign-in states, codes, sessions) are removed, so anonymous
        requests cannot grow the table for ever."""
        while True:
            await asyncio.sleep(interval)
            storage = self.storage
            if storage is None:
                return
            try:
                removed = await storage.one_time.prune()
                await storage.agents.prune()
                await storage.jtis.prune()
                if self.portal is not None:  # what the portal noted of ended sessions
                    await self.portal.core.web_sessions.prune()
            except Exception:
                log.warning("Removing expired one-time values failed", exc_info=True)
                continue
            if removed:
                log.debug("Removed %d expired one-time values", removed)

    async def _open_sessions(self) -> None:
        assert self.sessions is not None and self.rules is not None
        assert self.connector_starts is not None
        await self.connector_starts.start_all()
        await self.sessions.open_all()
        await self.rules.activate_all()
        if self.backfill is not None:
            await self.backfill.resume()  # what a crash interrupted and no rule rejoined

    @property
    def web_url(self) -> str:
        return (self.config.get("web.public_url") or self.config["appservice.address"]).rstrip("/")

    async def _ensure_account(self, mxid: UserID) -> None:
        assert self.accounts is not None
        await self.accounts.for_matrix_user(mxid)

    async def _on_matrix_event(self, evt: Event) -> None:
        assert self._dispatcher is not None  # transactions are refused until it exists
        await self._dispatcher.handle(evt)

    async def _wait_for_homeserver(self, attempts: int = 30) -> None:
        assert self.appservice is not None
        for attempt in range(1, attempts + 1):
            try:
                await self.appservice.intent.versions()
                return
            except (ClientError, MatrixError, OSError) as e:
                if attempt == attempts:
                    raise RuntimeError(
                        f"homeserver at {self.config['homeserver.address']} is not answering: {e}"
                    ) from e
                log.info("Waiting for the homeserver (%s)", e)
                await asyncio.sleep(min(attempt, 5))

    async def connectors_started(self) -> None:
        """Until every connector finished starting (they start after `start` returns)."""
        if self.connector_starts is not None:
            await self.connector_starts.wait_all()

    def network_status(self) -> dict[str, str]:
        return {name: c.state.value for name, c in self.connectors.items()}

    def network_status_detail(self) -> dict[str, str]:
        """Each network's state, with the reason one did not start (for `ping`)."""
        starts = self.connector_starts
        return {name: starts.status(name, state) if starts else state
                for name, state in self.network_status().items()}

    async def stop(self) -> None:
        """Stop taking transactions, then connectors, then the listener, then storage.
        Safe to call twice."""
        az, storage, security = self.appservice, self.storage, self.security
        self.appservice = self.storage = self.security = None
        if az:
            az.accepting = False
            az.ready = False
        if self._notices:
            await self._notices.stop()
            self._notices = None
        if self._activation and not self._activation.done():
            self._activation.cancel()
        if self._pruning:
            self._pruning.cancel()
            self._pruning = None
        if self._metrics_listener:
            await self._metrics_listener.stop()
            self._metrics_listener = None
        if self.retention is not None:
            await self.retention.stop()
        if self.backfill is not None:
            await self.backfill.stop()  # running backfills resume at the next start
        if self.mcp is not None:
            await self.mcp.stop()
            self.mcp = None
        if self.spaces is not None:
            await self.spaces.stop()  # unmade spaces stay owed in the database
        if self.delivery:
            await self.delivery.stop()  # unsent events stay queued for the next start
        for connector in self.connectors.values():
            try:
                await connector.stop()
            except Exception:
                log.exception("Stopping the %s connector failed", connector.network)
        if self.workers is not None:
            await self.workers.stop()  # the other workers take this one's rooms now
            self.workers = None
        if az:
            await az.stop()
        if self.encryption is not None:
            await self.encryption.stop()
            self.encryption = None
        if security:
            await security.close()
        if storage:
            await storage.close()
        if self._sqlite_lock is not None:
            self._sqlite_lock.release()
            self._sqlite_lock = None


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
