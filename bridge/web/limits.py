"""The web layer's rate limits, as one aiohttp middleware in front of every route.

- Sign-in pages, OAuth starts and callbacks, network link callbacks, settings and admin pages:
  per client network (`security.rate_limits.web`).
- The provisioning API: per client network, and per account once a token is known to work.
- Bearer tokens the API refused: the refusal is remembered briefly and answered again without
  a look-up (an unknown token otherwise costs a homeserver call each time), and a network that
  sends too many refused tokens is held off (`unknown_tokens`).

The client network is the session-binding one (`security.anomaly.ipv4_prefix`/`ipv6_prefix`,
`trusted_proxies`), so a reverse proxy does not put everyone in one bucket.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable

from aiohttp import web

from ..metrics import Metrics
from ..security.anomaly import SessionNetworks
from ..security.ratelimit import Limits, limited_response
from .network_endpoints import ACCOUNT
from .provisioning import PREFIX as PROVISIONING
from .signin_routes import bearer

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Paths people's browsers (and the networks' OAuth pages) reach: limited per client network.
WEB_PREFIXES = ("/oauth/", "/auth/", "/link/", "/account/", "/api/account/", "/admin/")
# A static document: nothing to protect, and clients fetch it to check their calls.
_UNLIMITED = (f"{PROVISIONING}/openapi.json",)


class WebLimits:
    def __init__(self, limits: Limits, networks: SessionNetworks,
                 metrics: Metrics | None = None) -> None:
        self.limits = limits
        self.networks = networks
        self.metrics = metrics

    def client_network(self, request: web.Request) -> str:
        address = self.networks.client_address(request)
        if address is None:
            return "local"  # a Unix socket
        try:
            return self.networks.network_of(address)
        except ValueError:
            return f"unparsed:{address}"

    def _limited(self, limit: str, wait: float) -> web.Response:
        if self.metrics is not None:
            self.metrics.rate_limited.labels(limit=limit).inc()
        return limited_response(wait)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if path in _UNLIMITED:
            return await handler(request)
        if path.startswith(PROVISIONING + "/"):
            return await self._provisioning(request, handler)
        if path.startswith(WEB_PREFIXES):
            wait = self.limits.web.take(self.client_network(request))
            if wait:
                return self._limited("web", wait)
        return await handler(request)

    async def _provisioning(self, request: web.Request, handler: Handler
                            ) -> web.StreamResponse:
        limits = self.limits
        network = self.client_network(request)
        wait = limits.provisioning_network.take(network)
        if wait:
            return self._limited("provisioning_network", wait)
        token = bearer(request)
        if token is None:
            return await handler(request)
        # The shared secret acts for whoever ?user_id= names: the pair is the credential.
        key = hashlib.sha256(
            f"{token}\0{request.query.get('user_id', '')}".encode()).hexdigest()
        refused = limits.refused_tokens.get(key)
        if refused is not None:
            self._count_refusal("cached")
            status, body = refused
            return web.Response(status=status, body=body, content_type="application/json")
        account = limits.token_accounts.get(key)
        if account is not None:
            wait = limits.provisioning_account.wait(account)
            if wait:
                return self._limited("provisioning_account", wait)
        else:
            # A token not seen working, from a network that sent too many refused ones.
            wait = limits.unknown_tokens.wait(network)
            if wait:
                return self._limited("unknown_tokens", wait)
        response = await handler(request)
        if response.status == 401:
            limits.unknown_tokens.take(network)
            self._count_refusal("checked")
            body = response.body if isinstance(response, web.Response) else None
            # Only a token the bridge does not know is remembered; a session refused for
            # another reason (its network changed) must be able to try again at once.
            if isinstance(body, bytes) and _errcode(body) in _UNKNOWN_TOKEN:
                limits.refused_tokens.put(key, (response.status, body))
            limits.token_accounts.pop(key)
            return response
        account = request.get(ACCOUNT)
        if account is not None:
            limits.token_accounts.put(key, account)
            limits.provisioning_account.take(account)
        return response

    def _count_refusal(self, how: str) -> None:
        if self.metrics is not None:
            self.metrics.bearer_refusals.labels(how=how).inc()


_UNKNOWN_TOKEN = ("M_UNKNOWN_TOKEN", "M_MISSING_TOKEN")


def _errcode(body: bytes) -> str | None:
    try:
        answer = json.loads(body)
    except ValueError:
        return None
    return answer.get("errcode") if isinstance(answer, dict) else None
