"""Prometheus metrics, on a registry owned by one bridge instance (no process-wide globals).

`/metrics` is served on the appservice listener unless `metrics.listen` names a listener of its
own (then the public listener has no `/metrics` at all); `metrics.token`, when set, is required
as `Authorization: Bearer <token>` wherever it is served.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

log = logging.getLogger("relayforge.metrics")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.transactions = Counter(
            "relayforge_appservice_transactions", "Appservice transactions received",
            ["outcome"], registry=self.registry,
        )
        self.transaction_seconds = Histogram(
            "relayforge_appservice_transaction_seconds", "Time to handle one transaction",
            registry=self.registry,
        )
        self.events = Counter(
            "relayforge_matrix_events", "Matrix events handled", ["type"], registry=self.registry,
        )
        self.event_seconds = Histogram(
            "relayforge_matrix_event_seconds", "Time to handle one Matrix event", ["type"],
            registry=self.registry,
        )
        self.remote_events = Counter(
            "relayforge_remote_events", "Events received from remote networks",
            ["network", "type"], registry=self.registry,
        )
        self.sends = Counter(
            "relayforge_sends", "Messages, edits, redactions and reactions bridged",
            ["network", "direction", "type"], registry=self.registry,
        )
        self.send_seconds = Histogram(
            "relayforge_send_seconds", "Time to bridge one event", ["network", "direction"],
            registry=self.registry,
        )
        self.errors = Counter(
            "relayforge_errors", "Errors while handling events", ["where"], registry=self.registry,
        )
        self.queue_events = Counter(
            "relayforge_outbound", "What happened to queued Matrix -> remote events",
            ["outcome"], registry=self.registry,
        )
        self.rate_limited = Counter(
            "relayforge_rate_limited", "Requests refused by a rate limit (429)", ["limit"],
            registry=self.registry,
        )
        self.bearer_refusals = Counter(
            "relayforge_bearer_refusals", "Provisioning bearer tokens refused: after a look-up "
            "(database or homeserver) or from the short-lived memory of refusals", ["how"],
            registry=self.registry,
        )
        self.http_server_errors = Counter(
            "relayforge_http_server_errors", "Web requests that hit an unexpected error (500, "
            "with a correlation id in the answer and the log), by route", ["route"],
            registry=self.registry,
        )

    async def handle_scrape(self, _: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.registry),
            headers={"Content-Type": CONTENT_TYPE_LATEST},
        )

    def scrape_handler(self, token: str | None
                       ) -> Callable[[web.Request], Awaitable[web.Response]]:
        """The /metrics handler; with a token, only scrapers presenting it are answered."""
        if not token:
            return self.handle_scrape
        expected = f"Bearer {token}".encode()

        async def guarded(request: web.Request) -> web.Response:
            presented = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(presented, expected):
                return web.Response(status=401, text="metrics.token required as a bearer "
                                    "token", headers={"WWW-Authenticate": "Bearer"})
            return await self.handle_scrape(request)

        return guarded


class MetricsListener:
    """A listener of its own for /metrics (`metrics.listen`), apart from the public one."""

    def __init__(self, metrics: Metrics, listen: str, token: str | None) -> None:
        host, _, port = listen.rpartition(":")
        self.host, self.port = host.strip("[]"), int(port)
        app = web.Application()
        app.router.add_get("/metrics", metrics.scrape_handler(token))
        self._runner = web.AppRunner(app, access_log=None)

    async def start(self) -> None:
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        log.info("Serving metrics on %s:%s", self.host, self.port)

    async def stop(self) -> None:
        await self._runner.cleanup()
