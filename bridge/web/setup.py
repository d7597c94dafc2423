"""Building the identity services and the web routes from the config."""

from __future__ import annotations

import attrs
from aiohttp import web

from ..config import Config
from ..db import Storage
from ..identity.accounts import Accounts
from ..identity.merge import Merges
from ..identity.providers import SignInProvider, parse_providers
from ..identity.signin import SignIn
from ..matrix.permissions import Permissions
from ..security.anomaly import SessionNetworks
from ..security.setup import Security
from ..security.system_keys import web_keys
from .admin_routes import AdminRoutes
from .browser import BrowserBinding
from .provisioning import ProvisioningApi
from .signin_routes import SignInRoutes


@attrs.define
class WebServices:
    accounts: Accounts
    merges: Merges
    signin: SignIn
    binding: BrowserBinding
    session_networks: SessionNetworks


async def build_web(config: Config, storage: Storage, security: Security,
                    public_url: str) -> WebServices:
    flow_key, csrf_key = await web_keys(security.vault)
    provider_configs, _ = parse_providers(config.get("identity.providers"))
    providers = {p.id: SignInProvider(p, f"{public_url}/oauth/{p.id}/callback")
                 for p in provider_configs}
    accounts = Accounts(storage, security.audit, security.vault,
                        list(config["identity.default_profiles"]))
    merges = Merges(storage, security.audit)
    signin = SignIn(storage, security.audit, accounts, merges, providers, flow_key)
    return WebServices(accounts, merges, signin, BrowserBinding(csrf_key, public_url),
                       security.session_networks)


def register_web_routes(app: web.Application, services: WebServices, config: Config
                        ) -> ProvisioningApi:
    SignInRoutes(services.signin, services.accounts, services.signin.storage,
                 services.binding, services.session_networks).register(app)
    AdminRoutes(services.signin, services.accounts, services.merges, services.signin.storage,
                services.signin.audit, services.binding,
                Permissions(config["bridge.permissions"]),
                services.session_networks).register(app)
    api = ProvisioningApi(services.accounts, services.signin,
                          config.get("provisioning.shared_secret"),
                          config["homeserver.address"], config["homeserver.domain"],
                          services.session_networks, Permissions(config["bridge.permissions"]))
    api.register(app)
    return api
