"""Serving the `mcp` SDK's ASGI application from the bridge's aiohttp listener.

The SDK speaks ASGI (Starlette); the bridge's one public listener is aiohttp. One request is
handed over as an ASGI `http` scope, and the response (a JSON body or an SSE stream) is
written back as it comes, so streamable HTTP streams work unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from aiohttp import web

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
AsgiApp = Callable[[Scope, Callable[[], Awaitable[Message]],
                    Callable[[Message], Awaitable[None]]], Awaitable[None]]


async def call_asgi(app: AsgiApp, request: web.Request) -> web.StreamResponse:
    body = await request.read()
    host, _, port = (request.host or "").rpartition(":")
    scope: Scope = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": f"{request.version.major}.{request.version.minor}",
        "method": request.method, "scheme": request.scheme, "path": request.path,
        "raw_path": request.raw_path.split("?", 1)[0].encode(),
        "query_string": request.query_string.encode(), "root_path": "",
        "headers": [(k.lower(), v) for k, v in request.raw_headers],
        "client": (request.remote or "", 0), "server": (host, int(port) if port.isdigit() else 80),
        "state": {},
    }
    sent_body = False
    finished = asyncio.Event()
    response: web.StreamResponse | None = None

    async def receive() -> Message:
        nonlocal sent_body
        if not sent_body:
            sent_body = True
            return {"type": "http.request", "body": body, "more_body": False}
        await finished.wait()  # the client is "connected" until the response is complete
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal response
        if message["type"] == "http.response.start":
            response = web.StreamResponse(status=message["status"])
            for name, value in message.get("headers", []):
                key = name.decode("latin-1")
                if key.lower() in ("content-length", "transfer-encoding", "connection"):
                    continue  # aiohttp frames the body itself
                response.headers.add(key, value.decode("latin-1"))
            await response.prepare(request)
        elif message["type"] == "http.response.body":
            assert response is not None, "body before start"
            chunk = message.get("body", b"")
            if chunk:
                await response.write(chunk)
            if not message.get("more_body", False):
                await response.write_eof()
                finished.set()

    try:
        await app(scope, receive, send)
    finally:
        finished.set()
    if response is None:
        return web.Response(status=500, text="no response")
    return response
