"""A provisioning API client that checks every answer against the served OpenAPI document."""

from __future__ import annotations

import json

import aiohttp
from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse

PREFIX = "/_matrix/provision/v1"


class Api:
    """Calls the bridge and checks every answer against the served OpenAPI document."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.openapi: OpenAPI | None = None
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))

    async def document(self) -> OpenAPI:
        if self.openapi is None:
            async with self.http.get(f"{self.base}{PREFIX}/openapi.json") as response:
                assert response.status == 200
                self.openapi = OpenAPI.from_dict(await response.json())
        return self.openapi

    async def call(self, method: str, path: str, *, token: str | None = None,
                   query: dict | None = None, body: dict | None = None,
                   http: aiohttp.ClientSession | None = None) -> tuple[int, dict]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with (http or self.http).request(method, self.base + path, params=query,
                                               json=body, headers=headers) as response:
            raw = await response.read()
            status = response.status
        request = MockRequest(self.base, method.lower(), path, args=query or {},
                              data=json.dumps(body).encode() if body is not None else None,
                              headers=headers, content_type="application/json")
        (await self.document()).validate_response(request, MockResponse(
            raw, status_code=status, content_type="application/json"))
        return status, json.loads(raw)
