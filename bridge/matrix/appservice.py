"""The appservice HTTP side: every request authenticated, every transaction handled once."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from mautrix.appservice import AppService, AppServiceAPI, IntentAPI
from mautrix.types import DeviceLists, DeviceOTKCount, EventType, RoomID, UserID

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


def transaction_key(txn_id: str, events: list, ephemeral: list | None,
                    to_device: list | None = None) -> str:
    """What makes a transaction "the same one again".

    The id alone is not enough: Synapse numbers transactions afresh after it restarts (seen:
    a restarted Synapse sent transaction 1 again, with new events). A retry carries the same
    events, so the key is the id plus a digest of the event ids (or, for a transaction of only
    ephemeral events or to-device messages, which have no ids, of their content).
    """
    ids = [e.get("event_id", "") for e in events if isinstance(e, dict)]
    material = json.dumps(ids if ids else [*(ephemeral or []), *(to_device or [])],
                          sort_keys=True)
    return f"{txn_id}:{hashlib.sha256(material.encode()).hexdigest()[:32]}"


def _presented_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        return token.strip() if scheme.lower() == "bearer" else None
    return request.rel_url.query.get("access_token")


class Encryptor:
    """What an intent needs to send in an encrypted room (bridge.matrix.crypto.BridgeCrypto)."""

    async def is_encrypted(self, room_id: RoomID) -> bool: ...  # pragma: no cover

    async def encrypt(self, room_id: RoomID, event_type: EventType, content: Any
                      ) -> tuple[EventType, Any]: ...  # pragma: no cover


class EncryptingIntent(IntentAPI):
    """mautrix's IntentAPI that encrypts in encrypted rooms with the bot's device, for the bot
    and every ghost alike (end-to-bridge encryption): the one place the bridge sends room
    events through, so no sender can forget it."""

    encryptor: Encryptor | None = None
    # The listener the bot's intent belongs to (set on the bot's intent only), so what is
    # built on the bot (the dispatcher) can tell it which transactions need no dedup.
    appservice: BridgeAppService | None = None

    async def send_message_event(self, room_id: RoomID, event_type: EventType, content: Any,
                                 **kwargs: Any) -> Any:
        encryptor = self.bot.encryptor if self.bot is not None else self.encryptor
        if (encryptor is not None and event_type != EventType.ROOM_ENCRYPTED
                and await encryptor.is_encrypted(room_id)):
            # Checked for the real type: encrypting must not skip the power-level check.
            await self._ensure_has_power_level_for(room_id, event_type)
            event_type, content = await encryptor.encrypt(room_id, event_type, content)
        return await super().send_message_event(room_id, event_type, content, **kwargs)


class _EncryptingAppServiceAPI(AppServiceAPI):
    """Makes EncryptingIntents (mautrix's AppServiceAPI names IntentAPI directly)."""

    def bot_intent(self) -> IntentAPI:
        if not self._bot_intent:
            self._bot_intent = EncryptingIntent(self.bot_mxid, self, state_store=self.state_store)
        return self._bot_intent

    def intent(self, user: UserID | None = None, token: str | None = None,
               base_url: str | None = None, real_user_as_token: bool = False) -> IntentAPI:
        if self.is_real_user:
            raise ValueError("Can't get child intent of real user")
        api = (self.real_user(user, token, base_url, as_token=real_user_as_token) if token
               else self.user(user))
        return EncryptingIntent(user, api, self.bot_intent(), self.state_store)


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
        # Set by the encryption module: then to-device messages, device-list changes and
        # one-time-key counts in transactions (MSC2409, MSC3202) are handed on.
        self.encryption_events = False
        # Synapse sends one transaction at a time, except when a forced retry (after the
        # bridge's ping) runs beside a scheduled one: then the two would be handled side by
        # side and a room's events queued out of order. One at a time, in arrival order.
        self._one_at_a_time = asyncio.Lock()
        # Says whether the dispatcher drops a raw event however often it comes (set by
        # it): the echoes of what the bridge sent itself (see `_not_echoes`).
        self.repeatable: Callable[[dict[str, Any]], bool] | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 8080) -> None:
        await super().start(host, port)
        # The same API as mautrix's, making intents that can encrypt. Nothing used the first
        # one yet: transactions are refused until the bridge is wired up.
        self._intent = _EncryptingAppServiceAPI(
            base_url=self.server, bot_mxid=self.bot_mxid, log=self.log, token=self.as_token,
            state_store=self.state_store, bridge_name=self.bridge_name,
            client_session=self._http_session,
            default_retry_count=self.default_http_retry_count,
        ).bot_intent()
        assert isinstance(self._intent, EncryptingIntent)
        self._intent.appservice = self

    def set_encryptor(self, encryptor: Encryptor | None) -> None:
        assert isinstance(self.intent, EncryptingIntent)
        self.intent.encryptor = encryptor

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
        to_device = body.get("to_device", body.get("de.sorunome.msc2409.to_device")) or None
        key = transaction_key(txn_id, body["events"], ephemeral, to_device)
        async with self._one_at_a_time:
            return await self._handle_once(txn_id, key, body, ephemeral, to_device)

    def _not_echoes(self, events: list) -> list:
        """The events left once the bridge's echoes are taken out: what it sent itself,
        coming back (`repeatable`), which the dispatcher would drop however often they come.
        They are counted, not decoded: on a busy bridge most events are echoes, and decoding
        one costs about as much as relaying a message."""
        repeatable = self.repeatable
        if repeatable is None:
            return events
        kept = []
        for event in events:
            if isinstance(event, dict) and repeatable(event):
                self.metrics.events.labels(type=str(event.get("type"))).inc()
            else:
                kept.append(event)
        return kept

    async def _handle_once(self, txn_id: str, key: str, body: dict[str, Any],
                           ephemeral: list | None, to_device: list | None) -> web.Response:
        """Handle a transaction unless it was handled before. It is marked handled only
        after every event in it was handled (portal events durably queued).

        A transaction of only echoes is not remembered: handling it again changes nothing,
        so it skips the database's "handled before?" read and "handled" write (two round
        trips per relayed message at low rates, on the connection relaying waits for). With
        typing, receipts or to-device messages it is (a to-device message cannot be
        decrypted twice); device-list changes and key counts are reports of state, harmless
        to repeat."""
        events = self._not_echoes(body["events"])
        remember = not (body["events"] and not events and not ephemeral and not to_device)
        try:
            if remember and await self.storage.transactions.is_handled(key):
                log.debug("Transaction %s was already handled; acknowledging only", txn_id)
                self.metrics.transactions.labels(outcome="duplicate").inc()
                return web.json_response({})
            with self.metrics.transaction_seconds.time():
                await self.handle_transaction(
                    txn_id, events=events, extra_data=body,
                    ephemeral=ephemeral if self.ephemeral_events else None,
                    **(_encryption_parts(body, to_device) if self.encryption_events else {}),
                )
            if remember:
                # Once round the event loop first: a room worker the transaction woke starts
                # its own reads before this write (on SQLite, one connection takes them in
                # turn). The person waits for their message to reach the network; the
                # homeserver waits only for this answer.
                await asyncio.sleep(0)
                await self.storage.transactions.mark_handled(key)
        except Exception:
            log.exception("Transaction %s failed; the homeserver will retry it", txn_id)
            self.metrics.transactions.labels(outcome="failed").inc()
            return _matrix_error(500, "M_UNKNOWN", "Transaction could not be handled")
        self.metrics.transactions.labels(outcome="handled").inc()
        return web.json_response({})


def _encryption_parts(body: dict[str, Any], to_device: list | None) -> dict[str, Any]:
    """The MSC2409/MSC3202 parts of a transaction (stable names first, then Synapse's
    unstable ones), in the shapes mautrix's handle_transaction takes."""
    lists = body.get("device_lists", body.get("org.matrix.msc3202.device_lists"))
    counts = body.get("device_one_time_keys_count",
                      body.get("org.matrix.msc3202.device_one_time_keys_count")) or {}
    return {
        "to_device": to_device if isinstance(to_device, list) else None,
        "device_lists": DeviceLists.deserialize(lists) if isinstance(lists, dict) else None,
        "otk_counts": {
            UserID(user): {device: DeviceOTKCount.deserialize(count)
                           for device, count in devices.items() if isinstance(count, dict)}
            for user, devices in counts.items() if isinstance(devices, dict)
        } if isinstance(counts, dict) else {},
    }
