"""Real OpenID Connect providers (npm oidc-provider) on loopback, and a person signing in
through one with plain HTTP (the login form of its development interactions)."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import time
import urllib.request
from html import unescape
from pathlib import Path

import aiohttp
import attrs
from yarl import URL

from bridge.sandbox.synapse import free_port

from .servers import unavailable

OIDC_DIR = Path(__file__).resolve().parent.parent / "oidc"


@attrs.define
class OidcProvider:
    id: str
    issuer: str
    client_id: str
    client_secret: str
    process: subprocess.Popen

    def provider_config(self, trust_email: bool = True, name: str | None = None) -> dict:
        return {"id": self.id, "type": "oidc", "name": name or self.id.title(),
                "discovery_url": f"{self.issuer}/.well-known/openid-configuration",
                "client_id": self.client_id, "client_secret": self.client_secret,
                "scopes": ["openid", "email"], "trust_email": trust_email}

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def start_provider(provider_id: str, redirect_uri: str) -> OidcProvider:
    node = shutil.which("node")
    if node is None or not (OIDC_DIR / "node_modules" / "oidc-provider").exists():
        unavailable("the test OpenID provider needs node and `npm ci --prefix tests/oidc` "
                    "(scripts/test does both)")
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PORT": str(port), "ISSUER": issuer, "CLIENT_ID": f"rf-{provider_id}",
           "CLIENT_SECRET": secrets.token_urlsafe(24), "REDIRECT_URI": redirect_uri}
    process = subprocess.Popen([node, str(OIDC_DIR / "server.mjs")], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"{issuer}/.well-known/openid-configuration", timeout=2):
                break
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError(
                    f"the test OpenID provider {provider_id} did not start") from None
            time.sleep(0.1)
    return OidcProvider(provider_id, issuer, env["CLIENT_ID"], env["CLIENT_SECRET"], process)


def person(tag: str = "p", *, email: str | None = None, verified: bool = True) -> str:
    """A login for the test provider: a fresh subject with this email."""
    subject = f"{tag}-{secrets.token_hex(4)}"
    email = email or f"{subject}@example.org"
    return f"{subject}|{email}|{'verified' if verified else 'unverified'}"


_FORM = re.compile(r'<form[^>]*action="([^"]+)"[^>]*method="post"', re.I)
_INPUT = re.compile(r'<input[^>]*type="hidden"[^>]*name="([^"]+)"[^>]*value="([^"]*)"', re.I)


async def sign_in_at_provider(http: aiohttp.ClientSession, start_url: str, login: str,
                              bridge_url: str) -> str:
    """Follow the bridge's start URL through the provider's login form; return the callback
    URL the provider sends the browser back to (not followed)."""
    url = start_url
    for _ in range(20):
        async with http.get(url, allow_redirects=False) as response:
            if response.status in (302, 303):
                url = str(URL(url).join(URL(response.headers["Location"])))
                if url.startswith(bridge_url) and "/callback" in url:
                    return url
                continue
            page = await response.text()
        form = _FORM.search(page)
        if form is None:
            raise AssertionError(f"no login form at {url}: {page[:300]}")
        fields = {name: unescape(value) for name, value in _INPUT.findall(page)}
        fields.update(login=login, password="any")
        async with http.post(unescape(form.group(1)), data=fields,
                             allow_redirects=False) as response:
            url = str(URL(url).join(URL(response.headers["Location"])))
            if url.startswith(bridge_url) and "/callback" in url:
                return url
    raise AssertionError("the provider never sent the browser back")

