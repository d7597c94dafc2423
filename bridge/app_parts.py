"""What a running bridge is made of: every part it builds (None until start-up builds it),
and the small questions the wiring and the lifecycle ask of it. `Bridge` (app.py) builds and
starts them; app_wiring connects them and app_lifecycle runs and stops them, all typed by this
class, so none of those modules needs to import another."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from mautrix.errors import MatrixError
from mautrix.types import UserID

from .audit.notices import HeadNotices
from .bot.bot import ManagementBot
from .bot.dispatch import MatrixDispatcher
from .bot.permissions import Level
from .compliance.retention import Retention
from .config import Config
from .core.backfill import Backfill
from .core.connector_starts import ConnectorStarts
from .core.delivery import Delivery
from .core.direct_history import DirectHistory
from .core.linking import Linking
from .core.mapping import MappingRules
from .core.router import Router
from .core.sessions import PersonaSessions
from .core.workers import SqliteLock, Workers
from .db import Storage
from .identity.accounts import Accounts
from .identity.merge import Merges
from .matrix.appservice import BridgeAppService
from .matrix.spaces import MatrixSpaces
from .metrics import Metrics, MetricsListener
from .networks.base import Connector
from .security.capabilities import Capabilities
from .security.policy import Policy
from .security.setup import Security
from .web.link_routes import LinkCallbackRoutes
from .web.portal import Portal
from .web.provisioning import ProvisioningApi
from .web.setup import WebServices

log = logging.getLogger("relayforge")


class BridgeParts:
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
        self.direct_history: DirectHistory | None = None  # direct chats' history
        self.policy: Policy | None = None
        self.capabilities: Capabilities | None = None
        self.retention: Retention | None = None  # compliance.retention_days
        self.spaces: MatrixSpaces | None = None
        self.workers: Workers | None = None  # this process among those on the database
        self._sqlite_lock: SqliteLock | None = None

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

    @property
    def web_url(self) -> str:
        return (self.config.get("web.public_url") or self.config["appservice.address"]).rstrip("/")

    async def _ensure_account(self, mxid: UserID) -> None:
        assert self.accounts is not None
        await self.accounts.for_matrix_user(mxid)

    def network_status(self) -> dict[str, str]:
        return {name: c.state.value for name, c in self.connectors.items()}

    def network_status_detail(self) -> dict[str, str]:
        """Each network's state, with the reason one did not start (for `ping`)."""
        starts = self.connector_starts
        return {name: starts.status(name, state) if starts else state
                for name, state in self.network_status().items()}
