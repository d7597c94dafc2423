"""The account portal on the bridge's own listener: built from the web services, with the
Matrix side's linking, mapping rules and capabilities attached once they exist."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from ..core.linking import Linking
from ..core.mapping import MappingRules
from ..security.capabilities import Capabilities
from ..security.permissions import Permissions
from .portal_account import PortalAccount
from .portal_link import PortalLink
from .portal_routes import PortalCore, PortalHome
from .portal_rules import PortalRules

if TYPE_CHECKING:
    from .setup import WebServices


class Portal:
    def __init__(self, core: PortalCore) -> None:
        self.core = core
        self.areas = (PortalHome(core), PortalLink(core), PortalRules(core),
                      PortalAccount(core))

    @classmethod
    def build(cls, services: WebServices, permissions: Permissions) -> Portal:
        return cls(PortalCore(services.signin, services.accounts, services.signin.storage,
                              services.binding, permissions, services.session_networks))

    def register(self, app: web.Application) -> None:
        for area in self.areas:
            area.register(app)

    def attach(self, linking: Linking, rules: MappingRules,
               capabilities: Capabilities | None) -> None:
        self.core.linking, self.core.rules = linking, rules
        self.core.capabilities = capabilities
