"""The Events API over HTTP: Slack POSTs each event_callback to the app's request URL,
signed with the app's signing secret (v0 HMAC-SHA256 over "v0:{timestamp}:{body}")."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import time
from typing import Any

import aiohttp
import attrs

from .models import Activity, SlackApp

USER_AGENT = "Slackbot 1.0 (+https://api.slack.com/robots)"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


@attrs.define
class HttpDelivery:
    app_id: str
    url: str
    body: bytes
    headers: dict[str, str]
    # None when nothing answered in time (Slack's http_timeout) or the connection failed.
    status: int | None
    response_text: str
    retry_num: int = 0
    payload: dict[str, Any] | None = None
    error: str = ""

    @property
    def succeeded(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class EventsApiDelivery:
    def __init__(self, apps: dict[str, SlackApp], activity: Activity) -> None:
        self.apps = apps
        self.activity = activity
        self.deliveries: list[HttpDelivery] = []
        # Slack gives the app 3 seconds to answer.
        self.timeout = 3.0
        # Automatic retries after a failure (Slack's are ~0 s, 1 min and 5 min later); none by
        # default so tests decide when with retry_failed().
        self.retry_delays: tuple[float, ...] = ()
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def post(self, app: SlackApp, body: bytes, *, url: str | None = None,
                   timestamp: str | None = None, signature: str | None = None,
                   retry_num: int = 0, retry_reason: str = "",
                   payload: dict[str, Any] | None = None) -> HttpDelivery:
        """POST `body` to the app. Unless given, the timestamp is now and the signature is
        the correct one, so tests can send stale or forged requests through the same path."""
        target = url or app.request_url
        if not target:
            raise ValueError(f"app {app.id} has no request_url")
        timestamp = timestamp if timestamp is not None else str(int(time.time()))
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
                   "X-Slack-Request-Timestamp": timestamp,
                   "X-Slack-Signature": signature if signature is not None
                   else sign(app.signing_secret, timestamp, body)}
        if retry_num:
            headers.update({"X-Slack-Retry-Num": str(retry_num),
                            "X-Slack-Retry-Reason": retry_reason})
        record = HttpDelivery(app_id=app.id, url=target, body=body, headers=headers,
                              status=None, response_text="", retry_num=retry_num,
                              payload=payload)
        try:
            async with self._client().post(
                    target, data=body, headers=headers, allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=self.timeout)) as response:
                record.status = response.status
                record.response_text = await response.text()
        except TimeoutError:
            record.error = "http_timeout"
        except aiohttp.ClientError:
            record.error = "connection_failed"
        self.deliveries.append(record)
        self.activity.notify()
        return record

    async def deliver(self, app: SlackApp, payload: dict[str, Any]) -> HttpDelivery:
        body = json.dumps(payload).encode()
        record = await self.post(app, body, payload=payload)
        for attempt, delay in enumerate(self.retry_delays, start=1):
            if record.succeeded:
                break
            await asyncio.sleep(delay)
            record = await self.post(app, body, payload=payload, retry_num=attempt,
                                     retry_reason=record.error or "http_error")
        return record

    async def retry_failed(self, app: SlackApp | None = None) -> list[HttpDelivery]:
        """Resend every event whose latest attempt failed, as Slack's next retry would."""
        latest: dict[bytes, HttpDelivery] = {}
        for record in self.deliveries:
            if record.payload is not None and (app is None or record.app_id == app.id):
                latest[record.body] = record
        retried = []
        for record in latest.values():
            if record.succeeded or record.retry_num >= 3:
                continue
            retried.append(await self.post(
                self.apps[record.app_id], record.body, url=record.url, payload=record.payload,
                retry_num=record.retry_num + 1, retry_reason=record.error or "http_error"))
        return retried

    async def url_verification(self, app: SlackApp, challenge: str | None = None
                               ) -> HttpDelivery:
        """The handshake Slack does when a request URL is saved; check `.response_text`
        (or its JSON) carries the challenge back."""
        body = json.dumps({"token": app.verification_token,
                           "challenge": challenge or secrets.token_urlsafe(32),
                           "type": "url_verification"}).encode()
        return await self.post(app, body)
