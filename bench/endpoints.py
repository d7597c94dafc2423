"""The two things Matrix messages are delivered to: the bridge's connector and a bare appservice.

`BenchConnector` is a network living in memory, as the test-only loopback connector is (the
benchmark does not import the tests). `ProbeAppService` is the smallest appservice that can
receive transactions: it is the baseline for Matrix -> remote latency, registered with the same
homeserver as a second appservice.
"""

from __future__ import annotations

import hmac
import itertools
import time
from typing import Any

from aiohttp import web

from bridge.networks.base import (
    BridgeSink,
    Connector,
    ConnectorState,
    MatrixEdit,
    MatrixMessage,
    MatrixReaction,
    MatrixRedaction,
    RemoteEvent,
    SendResult,
)

from .arrivals import Arrivals

NETWORK = "bench"


class BenchConnector(Connector):
    network = NETWORK
    # Relays as the bridge bot would for a network without puppeting: no impersonation tokens,
    # so no persona has to be linked for the benchmark.
    requires_authorization = False

    def __init__(self, delivered: Arrivals) -> None:
        super().__init__()
        self.delivered = delivered
        self.sink: BridgeSink | None = None
        self._ids = itertools.count(1)

    async def start(self, sink: BridgeSink) -> None:
        self.sink = sink
        self.state = ConnectorState.CONNECTED

    async def stop(self) -> None:
        self.state = ConnectorState.STOPPED

    async def emit(self, event: RemoteEvent) -> None:
        """Something happened on the remote network: report it as a real connector does."""
        assert self.sink is not None, "connector not started"
        await self.sink.handle_remote_event(event)

    async def send_message(self, event: MatrixMessage) -> SendResult:
        # The clock stops here, on entry: this is where a real connector would start talking
        # to its network.
        self.delivered.record(event.text)
        return SendResult(f"bench-{next(self._ids)}")

    async def send_edit(self, event: MatrixEdit) -> None:
        pass

    async def send_redaction(self, event: MatrixRedaction) -> None:
        pass

    async def send_reaction(self, event: MatrixReaction) -> SendResult:
        return SendResult(f"bench-r-{next(self._ids)}")


class ProbeAppService:
    """Answers the homeserver's transactions at once and notes when each message arrived."""

    def __init__(self, hs_token: str, delivered: Arrivals) -> None:
        self.hs_token = hs_token
        self.delivered = delivered
        self.transactions = 0
        self._runner: web.AppRunner | None = None

    async def start(self, host: str, port: int) -> None:
        app = web.Application()
        app.router.add_put("/_matrix/app/v1/transactions/{txn}", self._transaction)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    async def _transaction(self, request: web.Request) -> web.Response:
        # Taken as the request reaches the handler: the baseline is the homeserver's delivery
        # alone, so everything the bridge does with a transaction before its connector is
        # called (parsing, dedup, dispatch, lookups) shows up as added latency.
        arrived = time.perf_counter()
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if not hmac.compare_digest(token.encode(), self.hs_token.encode()):
            return web.json_response({"errcode": "M_FORBIDDEN"}, status=403)
        body: dict[str, Any] = await request.json()
        self.transactions += 1
        for event in body.get("events", []):
            if event.get("type") == "m.room.message":
                text = event.get("content", {}).get("body")
                if isinstance(text, str):
                    self.delivered.record(text, arrived)
        return web.json_response({})
