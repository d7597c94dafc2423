"""A small HTTP server on 127.0.0.1 that records every request it gets (headers included)
and answers from a table of paths: a foreign host for media tests, where a token must never
arrive, or an "internal" service the bridge must never reach."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import attrs
from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@attrs.frozen
class Seen:
    path: str
    authorization: str | None


class RecordingServer:
    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.routes: dict[str, Handler] = {}
        # Set to hold answers (a server that never replies, for timeouts); released at stop.
        self.release = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def host(self) -> str:
        """The `media.trusted_hosts` entry naming this server."""
        return f"127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return f"{self.origin}{path}"

    def serve(self, path: str, body: bytes, content_type: str = "application/octet-stream",
              *, chunked: bool = False) -> str:
        async def answer(request: web.Request) -> web.StreamResponse:
            if not chunked:
                return web.Response(body=body, content_type=content_type)
            # No Content-Length: the size is only known by reading.
            response = web.StreamResponse(headers={"Content-Type": content_type})
            response.enable_chunked_encoding()
            await response.prepare(request)
            for start in range(0, len(body), 1000):
                await response.write(body[start:start + 1000])
            await response.write_eof()
            return response

        self.routes[path] = answer
        return self.url(path)

    def redirect(self, path: str, location: str) -> str:
        async def answer(request: web.Request) -> web.StreamResponse:
            raise web.HTTPFound(location)

        self.routes[path] = answer
        return self.url(path)

    def hang(self, path: str) -> str:
        async def answer(request: web.Request) -> web.StreamResponse:
            await self.release.wait()
            return web.Response(text="too late")

        self.routes[path] = answer
        return self.url(path)

    def authorizations(self) -> list[str | None]:
        return [s.authorization for s in self.seen]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(Seen(request.path, request.headers.get("Authorization")))
        handler = self.routes.get(request.path)
        if handler is None:
            raise web.HTTPNotFound()
        return await handler(request)

    async def start(self) -> RecordingServer:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        self.release.set()
        if self._runner is not None:
            await self._runner.cleanup()
