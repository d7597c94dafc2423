"""The appservice HTTP side: every request authenticated, every transaction handled once."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from mautrix.appservice import AppService

from ..db import Storage
from ..metrics import Metrics

log = logging.getLogger("relayforge.appservice")

# Paths where the homeserver talks to us: all of them must carry the hs_token.
_HOMESERVER_PATHS = ("/_matrix/app/",)


def _matrix_error(status: int, errcode: str, message: str) -> web.Response:
    return web.Response(
        status=status,
        content_type="application/json",
        text=json.dumps({"errcode": errcode, "error": message}),
    )


def transaction_key(txn_id: str, events: list, ephemeral: list | None) -> str:
    """What makes a transaction "the same one again".

    The id alone is not enough: Synapse numbers transactions afresh after it restarts (seen:
    a restarted Synapse sent transaction 1 again, with new events). A retry carries the same
    events, so the key is the id plus a digest of the event ids (or, for a transaction of only
    ephemeral events, which have no ids, of their content).
    """
    ids = [e.get("event_id", "") for e in events if isinstance(e, dict)]
    material = json.dumps(ids if ids else ephemeral or [], sort_keys=True)
    return f"{txn_id}:{hashlib.sha256(material.encode()).hexdigest()[:32]}"


def _presented_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        return token.strip() if scheme.lower() == "bearer" else None
    return request.rel_url.query.get("access_token")


class BridgeAppService(AppService):
    """mautrix's AppService with the bridge's own rules on top.

    - The hs_token is checked in a middleware in front of every homeserver-facing route, in
      constant time, so a route added later cannot forget it. No token -> 401, wrong -> 403.
    - Handled transaction ids live in the database, so a transaction replayed after a restart
      is acknowledged without handling its events again.
    """

    def __init__(self, *, storage: Storage, metrics: Metrics,
                 middlewares: list | None = None, **kwargs: Any) -> None:
        self.storage = storage
        self.metrics = metrics
        super().__init__(
            state_store=storage.state_store,
            aiohttp_params={"middlewares": [self._auth_middleware, *(middlewares or [])]},
            **kwargs,
        )
        # Events of one transaction are handled in order, and the transaction is acknowledged
        # only after all of them were handled.
        self.synchronous_handlers = True
        # Transactions are refused (and retried by the homeserver) until the bridge is wired up.
        self.accepting = False

    @web.middleware
    async def _auth_middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path.startswith(_HOMESERVER_PATHS):
            token = _presented_token(request)
            if token is None:
                self.metrics.transactions.labels(outcome="unauthorized").inc()
                return _matrix_error(401, "M_UNAUTHORIZED", "Missing homeserver token")
            if not hmac.compare_digest(token.encode(), self.hs_token.encode()):
                log.warning("Rejected a request to %s with a wrong hs_token", request.path)
                self.metrics.transactions.labels(outcome="forbidden").inc()
                return _matrix_error(403, "M_FORBIDDEN", "Wrong homeserver token")
        return await handler(request)

    def _check_token(self, request: web.Request) -> bool:
        # The middleware already rejected bad tokens; keep mautrix's own check consistent.
        token = _presented_token(request)
        return token is not None and hmac.compare_digest(token.encode(), self.hs_token.encode())

    def register_routes(self, app: web.Application) -> None:
        # Our transaction endpoint replaces mautrix's: it answers 500 when handling fails, so
        # the homeserver retries instead of the events being dropped.
        # Only the v1 paths: homeservers stopped using the unprefixed legacy ones long ago.
        v1 = "/_matrix/app/v1"
        app.router.add_route("PUT", f"{v1}/transactions/{{transaction_id}}", self._put_transaction)
        app.router.add_route("GET", f"{v1}/users/{{user_id}}", self._http_query_user)
        app.router.add_route("GET", f"{v1}/rooms/{{alias}}", self._http_query_alias)
        app.router.add_route("POST", f"{v1}/ping", self._http_ping)

    async def _put_transaction(self, request: web.Request) -> web.Response:
        txn_id = request.match_info["transaction_id"]
        if not self.accepting:
            return _matrix_error(503, "M_UNKNOWN", "The bridge is starting or stopping")
        try:
            body = await request.json()
        except ValueError:
            return _matrix_error(400, "M_NOT_JSON", "Body is not JSON")
        if not isinstance(body, dict) or not isinstance(body.get("events"), list):
            return _matrix_error(400, "M_BAD_JSON", "Body needs an 'events' list")
        ephemeral = body.get("ephemeral", body.get("de.sorunome.msc2409.ephemeral"))
        key = transaction_key(txn_id, body["events"], ephemeral)
        try:
            if await self.storage.transactions.is_handled(key):
                log.debug("Transaction %s was already handled; acknowledging only", txn_id)
                self.metrics.transactions.labels(outcome="duplicate").inc()
                return web.json_response({})
            with self.metrics.transaction_seconds.time():
                await self.handle_transaction(
                    txn_id, events=body["events"], extra_data=body,
                    ephemeral=ephemeral if self.ephemeral_events else None,
                )
            await self.storage.transactions.mark_handled(key)
        except Exception:
            log.exception("Transaction %s failed; the homeserver will retry it", txn_id)
            self.metrics.transactions.labels(outcome="failed").inc()
            return _matrix_error(500, "M_UNKNOWN", "Transaction could not be handled")
        self.metrics.transactions.labels(outcome="handled").inc()
        return web.json_response({})
