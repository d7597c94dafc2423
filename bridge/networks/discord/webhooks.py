"""The bridge's webhooks: one per bridged channel, owned by the bot, through which linked
people (under their Discord name and picture) and relayed Matrix users post, edit and delete.

Webhook calls are made here rather than through discord.py so Discord's answers reach the
delivery queue: a 429 (or a bucket known to be empty) becomes `RateLimited` with Discord's
wait, retried by the queue and never counted as a failed attempt; 401/403 answers are counted
per channel, and a channel that keeps refusing is not sent to any more, long before Discord's
ban for invalid requests (10,000 in ten minutes). A webhook a server admin deleted is
recreated once. Webhook tokens are never stored: the bot reads them back from Discord
(`GET /channels/{id}/webhooks`) after a restart."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import aiohttp
import attrs

from ..base import Attachment, RateLimited, Unsupported

if TYPE_CHECKING:
    from .connector import DiscordConnector

log = logging.getLogger("relayforge.discord.webhooks")
WEBHOOK_NAME = "RelayForge"
REFUSAL_WINDOW = 600.0


class DiscordHTTPError(Exception):
    def __init__(self, status: int, code: int | None, message: str) -> None:
        super().__init__(f"Discord answered {status}: {message}")
        self.status, self.code = status, code


@attrs.define
class Hook:
    id: str
    token: str = attrs.field(repr=False)


class Webhooks:
    def __init__(self, connector: DiscordConnector) -> None:
        self.c = connector
        self._hooks: dict[str, Hook] = {}
        self._creating: dict[str, asyncio.Lock] = {}
        # Per webhook: (requests left, when the bucket refills); and the global limit.
        self._buckets: dict[str, tuple[int, float]] = {}
        self._global_until = 0.0
        self._refusals: dict[str, deque[float]] = {}
        self._http: aiohttp.ClientSession | None = None

    @property
    def ids(self) -> set[str]:
        return {hook.id for hook in self._hooks.values()}

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    def forget(self, channel_id: str) -> None:
        """The channel's webhooks changed (WEBHOOKS_UPDATE): look ours up again next time."""
        self._hooks.pop(channel_id, None)

    async def hook_for(self, channel_id: str) -> Hook:
        hook = self._hooks.get(channel_id)
        if hook is not None:
            return hook
        async with self._creating.setdefault(channel_id, asyncio.Lock()):
            hook = self._hooks.get(channel_id)
            if hook is None:
                hook = await self.c.bot_call(self._find_or_create(channel_id), channel_id)
                self._hooks[channel_id] = hook
            return hook

    async def _find_or_create(self, channel_id: str) -> Hook:
        channel = await self.c.channel(channel_id)
        me = self.c.bot_user_id
        for webhook in await channel.webhooks():  # type: ignore[union-attr]
            if webhook.token and webhook.user is not None and str(webhook.user.id) == me:
                return Hook(str(webhook.id), webhook.token)
        created = await channel.create_webhook(  # type: ignore[union-attr]
            name=WEBHOOK_NAME, reason="RelayForge bridges this channel with Matrix")
        log.info("Created a webhook in Discord channel %s", channel_id)
        assert created.token is not None
        return Hook(str(created.id), created.token)

    # ---- the calls ------------------------------------------------------------------------

    async def execute(self, channel_id: str, payload: dict[str, Any],
                      attachment: Attachment | None, thread_id: str | None) -> dict[str, Any]:
        params = {"wait": "true", **({"thread_id": thread_id} if thread_id else {})}
        return await self._call("POST", channel_id, "", params, payload, attachment)

    async def edit(self, channel_id: str, message_id: str, content: str,
                   thread_id: str | None) -> None:
        params = {"thread_id": thread_id} if thread_id else {}
        await self._call("PATCH", channel_id, f"/messages/{message_id}", params,
                         {"content": content, "allowed_mentions": {"parse": ["users"]}}, None)

    async def delete(self, channel_id: str, message_id: str, thread_id: str | None) -> None:
        params = {"thread_id": thread_id} if thread_id else {}
        await self._call("DELETE", channel_id, f"/messages/{message_id}", params, None, None)

    async def _call(self, method: str, channel_id: str, suffix: str, params: dict[str, str],
                    payload: dict[str, Any] | None, attachment: Attachment | None,
                    *, recreated: bool = False) -> Any:
        self._check_refusals(channel_id)
        hook = await self.hook_for(channel_id)
        self._check_limits(hook)
        if self._http is None:
            self._http = aiohttp.ClientSession()
        url = f"{self.c.api_url}/webhooks/{hook.id}/{hook.token}{suffix}"
        body: Any = None
        if attachment is not None:
            body = aiohttp.FormData()
            body.add_field("payload_json", json.dumps({**(payload or {}), "attachments": [
                {"id": 0, "filename": attachment.name}]}), content_type="application/json")
            body.add_field("files[0]", attachment.data, filename=attachment.name,
                           content_type=attachment.mimetype)
        async with self._http.request(method, url, params=params, data=body,
                                      json=payload if attachment is None else None) as r:
            self._note_limits(hook, r)
            data = await r.json(content_type=None) if r.status != 204 else None
            if r.status < 300:
                return data
            error = data if isinstance(data, dict) else {}
        code, message = error.get("code"), str(error.get("message") or r.reason)
        if r.status == 429:
            retry_after = float(error.get("retry_after") or r.headers.get("Retry-After") or 1)
            if error.get("global") or r.headers.get("X-RateLimit-Global"):
                self._global_until = time.monotonic() + retry_after
            self._buckets[hook.id] = (0, time.monotonic() + retry_after)
            raise RateLimited(retry_after, "Discord rate limit on the channel's webhook")
        if r.status == 404 and code == 10015 and not recreated:
            # A server admin deleted the webhook: make a new one, once.
            log.warning("The webhook of Discord channel %s is gone; creating it again",
                        channel_id)
            self.forget(channel_id)
            return await self._call(method, channel_id, suffix, params, payload, attachment,
                                    recreated=True)
        if r.status in (401, 403):
            self.refused(channel_id)
            raise Unsupported(f"Discord refused it ({r.status}: {message})")
        raise DiscordHTTPError(r.status, code, message)

    def _check_limits(self, hook: Hook) -> None:
        now = time.monotonic()
        if self._global_until > now:
            raise RateLimited(self._global_until - now, "Discord's global rate limit")
        remaining, reset_at = self._buckets.get(hook.id, (1, 0.0))
        if remaining <= 0 and reset_at > now:
            raise RateLimited(reset_at - now, "Discord rate limit on the channel's webhook")

    def _note_limits(self, hook: Hook, response: aiohttp.ClientResponse) -> None:
        remaining = response.headers.get("X-RateLimit-Remaining")
        reset_after = response.headers.get("X-RateLimit-Reset-After")
        if remaining is not None and reset_after is not None:
            try:
                self._buckets[hook.id] = (int(remaining),
                                          time.monotonic() + float(reset_after))
            except ValueError:
                pass

    # ---- refusals -------------------------------------------------------------------------

    def refused(self, channel_id: str) -> None:
        """Count a 401/403 from Discord for something sent into the channel."""
        now = time.monotonic()
        times = self._refusals.setdefault(channel_id, deque())
        times.append(now)
        while times and times[0] < now - REFUSAL_WINDOW:
            times.popleft()

    def _check_refusals(self, channel_id: str) -> None:
        times = self._refusals.get(channel_id)
        if not times:
            return
        now = time.monotonic()
        while times and times[0] < now - REFUSAL_WINDOW:
            times.popleft()
        if len(times) >= self.c.max_refusals:
            raise Unsupported(
                f"Discord refused {len(times)} requests into this channel in ten minutes; "
                "the bridge stopped sending there for now (check the bot's permissions on "
                "the server)")
