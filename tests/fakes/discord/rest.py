"""The fake REST API v10 (bot, webhook and OAuth2 bearer calls), with Discord's rate-limit
headers on every answer and 429s on demand.

Answers carry `Content-Type: application/json` exactly (discord.py reads a body with a
charset as text), and a 429 carries a `Via` header (without one discord.py takes it for a
Cloudflare ban)."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import attrs
from aiohttp import web

from .models import THREAD_TYPES, Attachment, RequestRecord, snowflake

if TYPE_CHECKING:
    from .server import FakeDiscord

Handler = Callable[[web.Request, "Call"], Awaitable[Any]]


class DiscordError(Exception):
    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@attrs.define
class Call:
    """One request as a handler sees it: who is calling and what they sent."""

    auth: str | None
    json: Any
    form: dict[str, Any]
    files: list[tuple[str, str, bytes]]
    query: dict[str, str]


@attrs.define
class RateLimitRule:
    """Answer requests whose path contains `path` with 429 `times` times."""

    path: str
    retry_after: float
    times: int
    is_global: bool = False
    method: str | None = None
    # When the limit it last answered ends: a request before then came too early.
    until: float = 0.0


def response(data: Any, status: int = 200, headers: dict[str, str] | None = None
             ) -> web.Response:
    if status == 204:
        return web.Response(status=204, headers=headers)
    return web.Response(status=status, body=json.dumps(data).encode(),
                        headers={"Content-Type": "application/json", **(headers or {})})


class RestApi:
    def __init__(self, fake: FakeDiscord) -> None:
        self.fake = fake
        self.log: list[RequestRecord] = []
        self.limits: list[RateLimitRule] = []
        # Requests that arrived while a 429 they got (or a global one) still held.
        self.early: list[RequestRecord] = []
        self._global_until = 0.0
        self._routes: list[tuple[str, list[str], Handler]] = []

    def route(self, method: str, pattern: str, handler: Handler) -> None:
        self._routes.append((method, pattern.strip("/").split("/"), handler))

    def _match(self, method: str, path: str) -> tuple[Handler, dict[str, str]] | None:
        parts = path.strip("/").split("/")
        for want_method, pattern, handler in self._routes:
            if want_method != method or len(pattern) != len(parts):
                continue
            params: dict[str, str] = {}
            for want, got in zip(pattern, parts, strict=True):
                if want.startswith("{"):
                    params[want.strip("{}")] = unquote(got)
                elif want != got:
                    break
            else:
                return handler, params
        return None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["path"]
        call = await self._read(request)
        record = RequestRecord(request.method, path, 0, dict(request.query), call.json,
                               {k: v for k, v in call.form.items() if isinstance(v, str)},
                               call.auth)
        self.log.append(record)
        try:
            limited = self._limited(request.method, path, record)
            if limited is not None:
                return limited
            found = self._match(request.method, path)
            if found is None:
                raise DiscordError(404, 0, "404: Not Found")
            handler, params = found
            request.match_info.update(params)
            data = await handler(request, call)
            record.status = 204 if data is None else 200
            return response(data, record.status, self._bucket_headers(path))
        except DiscordError as e:
            record.status = e.status
            if path.startswith("/oauth2/token"):
                # OAuth2 errors are RFC 6749's shape, not the API's.
                return response({"error": e.message}, e.status)
            return response({"message": e.message, "code": e.code}, e.status)
        finally:
            self.fake.activity.notify()

    async def _read(self, request: web.Request) -> Call:
        auth = request.headers.get("Authorization")
        form: dict[str, Any] = {}
        files: list[tuple[str, str, bytes]] = []
        body: Any = None
        ctype = request.content_type
        if ctype == "application/json":
            raw = await request.read()
            body = json.loads(raw) if raw else None
        elif ctype == "multipart/form-data":
            reader = await request.multipart()
            async for part in reader:
                if part.filename:  # type: ignore[union-attr]
                    files.append((part.filename, part.headers.get(  # type: ignore[union-attr]
                        "Content-Type", "application/octet-stream"), await part.read()))
                elif part.name == "payload_json":  # type: ignore[union-attr]
                    body = json.loads(await part.text())  # type: ignore[union-attr]
        elif ctype == "application/x-www-form-urlencoded":
            form = dict(await request.post())
        return Call(auth, body, form, files, dict(request.query))

    def _limited(self, method: str, path: str, record: RequestRecord) -> web.Response | None:
        now = time.monotonic()
        if now < self._global_until:
            self.early.append(record)
        for rule in self.limits:
            if rule.path in path and (rule.method in (None, method)) and now < rule.until:
                self.early.append(record)
        for rule in self.limits:
            if rule.times <= 0 or rule.path not in path or rule.method not in (None, method):
                continue
            rule.times -= 1
            rule.until = now + rule.retry_after
            if rule.is_global:
                self._global_until = rule.until
            record.status = 429
            headers = {"Via": "1.1 google", "Retry-After": f"{rule.retry_after:g}",
                       "X-RateLimit-Limit": "5", "X-RateLimit-Remaining": "0",
                       "X-RateLimit-Reset-After": f"{rule.retry_after:.3f}",
                       "X-RateLimit-Bucket": f"bucket-{abs(hash(rule.path)) % 10**8}"}
            if rule.is_global:
                headers["X-RateLimit-Global"] = "true"
            else:
                headers["X-RateLimit-Scope"] = "user"
            return response({"message": "You are being rate limited.",
                             "retry_after": rule.retry_after, "global": rule.is_global},
                            429, headers)
        return None

    @staticmethod
    def _bucket_headers(path: str) -> dict[str, str]:
        return {"X-RateLimit-Limit": "50", "X-RateLimit-Remaining": "49",
                "X-RateLimit-Reset": f"{time.time() + 1:.3f}",
                "X-RateLimit-Reset-After": "1.000",
                "X-RateLimit-Bucket": f"bucket-{abs(hash(path.split('/')[1:3].__str__()))}"}


# ---- the handlers ---------------------------------------------------------------------------

def register(api: RestApi) -> None:
    fake = api.fake
    state = fake

    def bot(call: Call) -> None:
        if call.auth != f"Bot {state.app.bot_token}":
            raise DiscordError(401, 0, "401: Unauthorized")

    async def users_me(request: web.Request, call: Call) -> Any:
        if call.auth and call.auth.startswith("Bearer "):
            return state.grant_for(call.auth).user.payload()
        bot(call)
        return {**state.app.bot.payload(), "verified": True, "mfa_enabled": False,
                "flags": 0}

    async def my_guilds(request: web.Request, call: Call) -> Any:
        grant = state.grant_for(call.auth, scope="guilds")
        return [{"id": g.id, "name": g.name, "icon": None, "owner": g.owner_id == grant.user.id,
                 "permissions": "0", "features": []}
                for g in state.guilds.values() if grant.user.id in g.members]

    async def application(request: web.Request, call: Call) -> Any:
        bot(call)
        return {"id": state.app.client_id, "name": "RelayForge", "description": "",
                "icon": None, "bot_public": False, "bot_require_code_grant": False,
                "owner": state.app.bot.payload(), "team": None, "verify_key": "0" * 64,
                "flags": state.app.flags, "rpc_origins": [], "summary": ""}

    async def get_channel(request: web.Request, call: Call) -> Any:
        bot(call)
        return state.channel(request.match_info["cid"]).payload()

    async def get_message(request: web.Request, call: Call) -> Any:
        bot(call)
        channel = state.channel(request.match_info["cid"])
        return state.render(state.message(channel, request.match_info["mid"]))

    async def history(request: web.Request, call: Call) -> Any:
        """GET /channels/{id}/messages as Discord answers it: newest first whichever way one
        pages; `before`, `after` and `around` exclusive (the first given counts), `limit`
        1-100 (50 unless given), 403 where the bot may not read the channel's history."""
        bot(call)
        channel = state.channel(request.match_info["cid"])
        if channel.id in state.unreadable:
            raise DiscordError(403, 50001, "Missing Access")
        try:
            limit = int(call.query.get("limit", 50))
        except ValueError:
            limit = 0
        if not 1 <= limit <= 100:
            raise DiscordError(400, 50035, "Invalid Form Body (limit: int between 1 and 100)")
        state.history_reads.append((channel.id, dict(call.query)))
        live = sorted((m for m in channel.messages if not m.deleted), key=lambda m: int(m.id))
        if "around" in call.query:
            around = int(call.query["around"])
            older = [m for m in live if int(m.id) <= around]
            newer = [m for m in live if int(m.id) > around]
            live = (older[-((limit + 1) // 2):] if limit > 1 else older[-1:])
            live += newer[:limit - len(live)]
        elif "before" in call.query:
            live = [m for m in live if int(m.id) < int(call.query["before"])][-limit:]
        elif "after" in call.query:
            live = [m for m in live if int(m.id) > int(call.query["after"])][:limit]
        else:
            live = live[-limit:]
        return [state.render(m) for m in reversed(live)]

    async def react(request: web.Request, call: Call) -> Any:
        bot(call)
        channel = state.channel(request.match_info["cid"])
        message = state.message(channel, request.match_info["mid"])
        key = request.match_info["emoji"]
        users = message.reactions.setdefault(key, [])
        if request.method == "PUT":
            if state.app.bot.id not in users:
                users.append(state.app.bot.id)
                await state.dispatch_reaction(message, state.app.bot, key, added=True)
        elif state.app.bot.id in users:
            users.remove(state.app.bot.id)
            await state.dispatch_reaction(message, state.app.bot, key, added=False)
        return None

    async def reaction_users(request: web.Request, call: Call) -> Any:
        """Who reacted with an emoji, by user id ascending, `after` and `limit` (1-100,
        25 unless given), as Discord pages them."""
        bot(call)
        channel = state.channel(request.match_info["cid"])
        if channel.id in state.unreadable:
            raise DiscordError(403, 50001, "Missing Access")
        message = state.message(channel, request.match_info["mid"])
        limit = int(call.query.get("limit", 25))
        if not 1 <= limit <= 100:
            raise DiscordError(400, 50035, "Invalid Form Body (limit: int between 1 and 100)")
        key = request.match_info["emoji"]
        users = sorted(message.reactions.get(key, []), key=int)
        after = int(call.query.get("after", 0))
        return [state.users[u].payload() for u in users if int(u) > after][:limit]

    async def list_webhooks(request: web.Request, call: Call) -> Any:
        bot(call)
        cid = request.match_info["cid"]
        state.channel(cid)
        return [w.payload() for w in state.webhooks.values() if w.channel_id == cid]

    async def create_webhook(request: web.Request, call: Call) -> Any:
        bot(call)
        channel = state.channel(request.match_info["cid"])
        if channel.is_thread:
            raise DiscordError(400, 50024, "Cannot execute action on this channel type")
        return state.add_webhook(channel, (call.json or {}).get("name") or "Captain Hook",
                                 state.app.bot).payload()

    async def thread_from_message(request: web.Request, call: Call) -> Any:
        bot(call)
        channel = state.channel(request.match_info["cid"])
        message = state.message(channel, request.match_info["mid"])
        thread = await state.open_thread(channel, (call.json or {}).get("name") or "thread",
                                         state.app.bot, from_message=message)
        return thread.payload()

    async def typing(request: web.Request, call: Call) -> Any:
        bot(call)
        state.channel(request.match_info["cid"])
        state.typing.append(request.match_info["cid"])
        return None

    async def active_threads(request: web.Request, call: Call) -> Any:
        bot(call)
        guild = state.guilds[request.match_info["gid"]]
        return {"threads": [c.payload() for c in guild.channels
                            if c.type in THREAD_TYPES and not c.archived], "members": []}

    async def archived_threads(request: web.Request, call: Call) -> Any:
        bot(call)
        channel = state.channel(request.match_info["cid"])
        guild = state.guilds[channel.guild_id]
        return {"threads": [c.payload() for c in guild.channels
                            if c.parent_id == channel.id and c.archived],
                "members": [], "has_more": False}

    async def get_member(request: web.Request, call: Call) -> Any:
        bot(call)
        guild = state.guilds[request.match_info["gid"]]
        member = guild.members.get(request.match_info["uid"])
        if member is None:
            raise DiscordError(404, 10007, "Unknown Member")
        return member.payload()

    # ---- webhooks (the token in the path is the authorisation) ---------------------------

    def webhook(request: web.Request) -> Any:
        hook = state.webhooks.get(request.match_info["wid"])
        if hook is None or hook.token != request.match_info["token"]:
            raise DiscordError(404, 10015, "Unknown Webhook")
        return hook

    def webhook_target(request: web.Request, call: Call, hook: Any) -> Any:
        channel = state.channel(hook.channel_id)
        thread_id = call.query.get("thread_id")
        if thread_id:
            thread = state.channel(thread_id)
            if thread.parent_id != channel.id:
                raise DiscordError(400, 220001, "Unknown thread for this webhook")
            return thread
        if channel.type == 15:
            raise DiscordError(400, 220001, "Webhooks posted to forum channels must have "
                               "a thread_name or thread_id")
        return channel

    async def execute(request: web.Request, call: Call) -> Any:
        hook = webhook(request)
        target = webhook_target(request, call, hook)
        if hook.channel_id in state.refusing:
            raise DiscordError(403, 50013, "Missing Permissions")
        body = call.json or {}
        if not body.get("content") and not call.files:
            raise DiscordError(400, 50006, "Cannot send an empty message")
        attachments = [Attachment(snowflake(), name, ctype, data)
                       for name, ctype, data in call.files]
        message = await state.post(target, state.webhook_user(hook, body), body.get(
            "content") or "", webhook_id=hook.id, attachments=attachments)
        return state.render(message) if call.query.get("wait") in ("true", "1") else None

    async def edit_webhook_message(request: web.Request, call: Call) -> Any:
        hook = webhook(request)
        target = webhook_target(request, call, hook)
        message = state.message(target, request.match_info["mid"])
        if message.webhook_id != hook.id:
            raise DiscordError(403, 50005, "Cannot edit a message authored by another user")
        await state.edit(message, (call.json or {}).get("content") or "")
        return state.render(message)

    async def delete_webhook_message(request: web.Request, call: Call) -> Any:
        hook = webhook(request)
        target = webhook_target(request, call, hook)
        message = state.message(target, request.match_info["mid"])
        if message.webhook_id != hook.id:
            raise DiscordError(403, 50005, "Cannot delete a message authored by another user")
        await state.delete(message)
        return None

    for method, pattern, handler in [
        ("GET", "/users/@me", users_me), ("GET", "/users/@me/guilds", my_guilds),
        ("GET", "/oauth2/applications/@me", application),
        ("GET", "/channels/{cid}", get_channel),
        ("GET", "/channels/{cid}/messages", history),
        ("GET", "/channels/{cid}/messages/{mid}", get_message),
        ("GET", "/channels/{cid}/messages/{mid}/reactions/{emoji}", reaction_users),
        ("PUT", "/channels/{cid}/messages/{mid}/reactions/{emoji}/@me", react),
        ("DELETE", "/channels/{cid}/messages/{mid}/reactions/{emoji}/@me", react),
        ("GET", "/channels/{cid}/webhooks", list_webhooks),
        ("POST", "/channels/{cid}/webhooks", create_webhook),
        ("POST", "/channels/{cid}/messages/{mid}/threads", thread_from_message),
        ("POST", "/channels/{cid}/typing", typing),
        ("GET", "/channels/{cid}/threads/archived/public", archived_threads),
        ("GET", "/guilds/{gid}/threads/active", active_threads),
        ("GET", "/guilds/{gid}/members/{uid}", get_member),
        ("POST", "/webhooks/{wid}/{token}", execute),
        ("PATCH", "/webhooks/{wid}/{token}/messages/{mid}", edit_webhook_message),
        ("DELETE", "/webhooks/{wid}/{token}/messages/{mid}", delete_webhook_message),
    ]:
        api.route(method, pattern, handler)
