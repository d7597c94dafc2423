"""Several bridge worker processes behind one appservice address, as a homeserver would reach
them through a load balancer: each request goes to the next worker that answers."""

from __future__ import annotations

import itertools
import socket

import aiohttp
from aiohttp import web


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LoadBalancer:
    """Round robin over the workers' ports; a worker that does not answer (killed) is
    skipped, as a load balancer's health check would. No worker answering: 502, and the
    homeserver sends the transaction again later."""

    def __init__(self, port: int, worker_ports: list[int]) -> None:
        self.port = port
        self.worker_ports = worker_ports
        self._next = itertools.cycle(range(len(worker_ports)))
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.served: dict[int, int] = dict.fromkeys(worker_ports, 0)

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120))
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{path:.*}", self._forward)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()
        if self._session:
            await self._session.close()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        body = await request.read()
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() not in ("host", "content-length", "transfer-encoding")}
        for _ in self.worker_ports:
            port = self.worker_ports[next(self._next)]
            try:
                async with self._session.request(
                        request.method, f"http://127.0.0.1:{port}{request.rel_url}",
                        headers=headers, data=body) as answer:
                    payload = await answer.read()
                    self.served[port] += 1
                    return web.Response(status=answer.status, body=payload, headers={
                        "Content-Type": answer.headers.get("Content-Type",
                                                           "application/json")})
            except aiohttp.ClientConnectionError:
                continue  # that worker is down: the next one
        return web.json_response({"errcode": "M_UNKNOWN", "error": "no worker"}, status=502)
