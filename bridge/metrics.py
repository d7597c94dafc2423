"""Prometheus metrics, on a registry owned by one bridge instance (no process-wide globals)."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest


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

    async def handle_scrape(self, _: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.registry),
            headers={"Content-Type": CONTENT_TYPE_LATEST},
        )
