"""The MCP endpoint at {web.public_url}/mcp, and the bridge as its authorisation server.

Built from the bridge's running parts (storage, router, delivery queue, bot, web sign-in) and
served by the bridge's own aiohttp listener: the SDK's streamable HTTP app (stateless, JSON
answers) behind its bearer check, and its OAuth endpoints, all handed the requests for their
paths. Everything an agent does goes through the core (see `acts.py`).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from urllib.parse import urlparse

from aiohttp import web
from mautrix.appservice import IntentAPI
from mcp.server.auth.settings import AuthSettings, ClientRegistrationOptions, RevocationOptions
from mcp.server.transport_security import TransportSecuritySettings

from ..audit import AuditLog
from ..config import Config
from ..core.delivery import Delivery
from ..core.router import Router
from ..db import Storage
from ..security.permissions import Permissions
from ..security.ratelimit import Bucket, RateLimiter
from ..security.system_keys import SYSTEM_PERSONA, SYSTEM_PROFILE
from ..security.vault import Vault
from ..web.setup import WebServices
from .acts import AgentActs
from .agents_page import AgentsPage
from .asgi import AsgiApp, call_asgi
from .consent import ConsentRoutes
from .oauth import SCOPES, AgentAuthorization
from .tools import AgentTools

log = logging.getLogger("relayforge.mcp")
MCP_PATH = "/mcp"
# The SDK's authorisation server endpoints (RFC 8414 metadata names them for clients).
OAUTH_PATHS = ("/.well-known/oauth-authorization-server", "/authorize", "/token",
               "/register", "/revoke")
RESOURCE_METADATA = f"/.well-known/oauth-protected-resource{MCP_PATH}"


class McpEndpoint:
    """Routes first (the listener's routes are fixed once it starts), the rest at `start`,
    once the router, the delivery queue and the bot exist; until then it answers 503."""

    def __init__(self, config: Config, public_url: str, storage: Storage, vault: Vault,
                 audit: AuditLog, web_services: WebServices) -> None:
        self.config = config
        self.public_url = public_url
        self.storage = storage
        self.vault = vault
        self.audit = audit
        self.web = web_services
        self._starlette: AsgiApp | None = None
        self._manager_task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    async def register(self, app: web.Application) -> None:
        cfg = self.config
        key = await self.vault.open_or_create(SYSTEM_PROFILE, SYSTEM_PERSONA, "mcp_client_key",
                                              lambda: secrets.token_bytes(32))
        self.authorization = AgentAuthorization(
            self.storage, self.audit, key, self.public_url, cfg["mcp.access_token_seconds"],
            cfg["mcp.refresh_token_days"])
        self.permissions = Permissions(cfg["bridge.permissions"])
        per_hour = cfg["mcp.registrations_per_hour"]
        self._registrations = RateLimiter(Bucket(per_hour, per_hour / 60))
        ConsentRoutes(self.storage, self.web.signin, self.web.binding,
                      self.web.session_networks, self.authorization,
                      self.permissions).register(app)
        AgentsPage(self.storage, self.web.signin, self.web.binding, self.web.session_networks,
                   self.audit).register(app)
        for path in (MCP_PATH, RESOURCE_METADATA):
            app.router.add_route("*", path, self._forward)
        for path in OAUTH_PATHS:
            app.router.add_route("*", path, self._forward_limited)

    async def start(self, router: Router, delivery: Delivery, bot: IntentAPI) -> None:
        cfg = self.config
        self.acts = AgentActs(self.storage, router, delivery, bot)
        tools = AgentTools(self.storage, self.authorization, self.acts, bot, router.ghosts,
                           self.audit, cfg["mcp.calls_per_minute"], cfg["mcp.sends_per_minute"],
                           self.permissions)
        public = urlparse(self.public_url)
        server = tools.server(
            auth_server_provider=self.authorization,
            auth=AuthSettings(
                issuer_url=self.public_url, resource_server_url=self.public_url + MCP_PATH,
                client_registration_options=ClientRegistrationOptions(
                    enabled=True, valid_scopes=list(SCOPES), default_scopes=list(SCOPES)),
                revocation_options=RevocationOptions(enabled=True),
                required_scopes=[], validate_token_resource=False))
        starlette = server.streamable_http_app(
            streamable_http_path=MCP_PATH, stateless_http=True, json_response=True,
            transport_security=TransportSecuritySettings(
                enable_dns_rebinding_protection=True, allowed_hosts=[public.netloc],
                allowed_origins=[f"{public.scheme}://{public.netloc}"]))
        manager = server.session_manager
        ready = asyncio.Event()

        async def run() -> None:
            # The SDK's task group lives in this one task, as anyio requires.
            async with manager.run():
                ready.set()
                await self._stop.wait()

        self._manager_task = asyncio.create_task(run(), name="mcp")
        await ready.wait()
        self._starlette = starlette
        log.info("MCP endpoint at %s%s", self.public_url, MCP_PATH)

    async def stop(self) -> None:
        self._stop.set()
        self._starlette = None
        if self._manager_task is not None:
            await asyncio.gather(self._manager_task, return_exceptions=True)
            self._manager_task = None

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        if self._starlette is None:
            return web.json_response({"error": "temporarily_unavailable"}, status=503)
        return await call_asgi(self._starlette, request)

    async def _forward_limited(self, request: web.Request) -> web.StreamResponse:
        """Registration and token requests are limited like the sign-in pages, and
        registrations (which need no sign-in) per client network and hour too."""
        limits = self.web.web_limits
        network = limits.client_network(request)
        wait = limits.limits.web.take(network)
        if not wait and request.path == "/register" and request.method == "POST":
            wait = self._registrations.take(network)
        if wait:
            return web.json_response(
                {"error": "temporarily_unavailable",
                 "error_description": f"too many requests; retry in {wait:.0f} s"},
                status=429, headers={"Retry-After": str(int(wait) + 1)})
        return await self._forward(request)
