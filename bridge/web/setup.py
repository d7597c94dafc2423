"""Building the identity services and the web routes from the config."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

import attrs
from aiohttp import web

from ..compliance.holds import Holds
from ..config import Config
from ..db import Storage
from ..identity.accounts import Accounts
from ..identity.merge import Merges
from ..identity.providers import SignInProvider, parse_providers
from ..identity.signin import SignIn
from ..metrics import Metrics
from ..security.anomaly import SessionNetworks
from ..security.permissions import Permissions
from ..security.ratelimit import Limits, RateLimitSettings
from ..security.setup import Security
from ..security.system_keys import web_keys
from .admin_holds import AdminHoldsPage, HoldEndpoints
from .admin_routes import AdminRoutes
from .browser import BrowserBinding
from .limits import WebLimits
from .portal import Portal
from .provisioning import ProvisioningApi
from .signin_routes import SignInRoutes


@attrs.define
class WebServices:
    accounts: Accounts
    merges: Merges
    signin: SignIn
    binding: BrowserBinding
    session_networks: SessionNetworks
    limits: Limits
    web_limits: WebLimits
    holds: Holds


def forwarded_https(trusted_proxies: list[str]) -> Callable[[web.Request], bool]:
    """Whether a request reached us over https: directly, or through a trusted reverse proxy
    that says so in X-Forwarded-Proto (anyone else's header is not believed)."""
    proxies = [ipaddress.ip_network(p, strict=False) for p in trusted_proxies]

    def check(request: web.Request) -> bool:
        if request.secure:
            return True
        try:
            remote = ipaddress.ip_address(request.remote or "")
        except ValueError:
            return False
        if not any(remote in proxy for proxy in proxies):
            return False
        schemes = request.headers.get("X-Forwarded-Proto", "").lower().split(",")
        return "https" in (s.strip() for s in schemes)

    return check


async def build_web(config: Config, storage: Storage, security: Security,
                    public_url: str, metrics: Metrics | None = None) -> WebServices:
    flow_key, csrf_key = await web_keys(security.vault)
    provider_configs, _ = parse_providers(config.get("identity.providers"))
    providers = {p.id: SignInProvider(p, f"{public_url}/oauth/{p.id}/callback")
                 for p in provider_configs}
    accounts = Accounts(storage, security.audit, security.vault,
                        list(config["identity.default_profiles"]))
    accounts.max_profiles = config["identity.max_profiles"]
    merges = Merges(storage, security.audit)
    signin = SignIn(storage, security.audit, accounts, merges, providers, flow_key)
    binding = BrowserBinding(csrf_key, public_url)
    binding.forwarded_https = forwarded_https(
        list(config.get("security.anomaly.trusted_proxies") or []))
    limits = Limits(RateLimitSettings.from_config(
        lambda key: config[f"security.rate_limits.{key}"]))
    return WebServices(accounts, merges, signin, binding, security.session_networks, limits,
                       WebLimits(limits, security.session_networks, metrics),
                       Holds(storage, security.audit))


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
    AdminHoldsPage(services.signin, services.signin.storage, services.holds, services.binding,
                   Permissions(config["bridge.permissions"]), services.session_networks,
                   config.get("compliance.export_directory")).register(app)
    HoldEndpoints(services.holds).register(app, api.authed)
    return api


def register_portal(app: web.Application, services: WebServices, config: Config) -> Portal:
    """The account portal's pages; linking, rules and capabilities are attached later."""
    portal = Portal.build(services.signin, services.accounts, services.binding,
                          Permissions(config["bridge.permissions"]), services.session_networks)
    portal.register(app)
    return portal
