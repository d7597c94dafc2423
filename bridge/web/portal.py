"""The account portal on the bridge's own listener: built from the web services, with the
Matrix side's linking, mapping rules and capabilities attached once they exist."""

from __future__ import annotations

from aiohttp import web

from ..core.linking import Linking
from ..core.mapping import MappingRules
from ..identity.accounts import Accounts
from ..identity.signin import SignIn
from ..security.anomaly import SessionNetworks
from ..security.capabilities import Capabilities
from ..security.permissions import Permissions
from .browser import BrowserBinding
from .link_routes import LinkCallbackRoutes, remember_oauth_step
from .portal_account import PortalAccount
from .portal_link import PortalLink
from .portal_routes import PortalCore, PortalHome
from .portal_rules import PortalRules


class Portal:
    def __init__(self, core: PortalCore) -> None:
        self.core = core
        self.link = PortalLink(core)
        self.areas = (PortalHome(core), self.link, PortalRules(core), PortalAccount(core))

    @classmethod
    def build(cls, signin: SignIn, accounts: Accounts, binding: BrowserBinding,
              permissions: Permissions, session_networks: SessionNetworks | None) -> Portal:
        return cls(PortalCore(signin, accounts, signin.storage, binding, permissions,
                              session_networks))

    def register(self, app: web.Application) -> None:
        for area in self.areas:
            area.register(app)

    def attach(self, linking: Linking, rules: MappingRules,
               capabilities: Capabilities | None,
               callbacks: LinkCallbackRoutes | None = None) -> None:
        self.core.linking, self.core.rules = linking, rules
        self.core.capabilities = capabilities
        if callbacks is not None:
            # Back from an OAuth network's page: consent in this browser, if signed in.
            linking.on_oauth_step.append(remember_oauth_step)
            callbacks.show_step = self.link.oauth_step
