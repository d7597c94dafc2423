"""Signing in with OAuth2 providers that have a userinfo call (Slack, Discord), against
wire-level fakes of their endpoints."""

from __future__ import annotations

import secrets

import pytest

from bridge.sandbox.synapse import free_port

from .fakes.oauth import FakeOAuthServer, FakeUser
from .support.web import Browser


@pytest.fixture
async def fakes(homeserver):
    servers = {}
    for network in ("slack", "discord"):
        server = FakeOAuthServer(network, f"{network}-client", secrets.token_urlsafe(16),
                                 f"{homeserver.appservice_url}/oauth/{network}/callback")
        await server.start(free_port())
        servers[network] = server
    yield servers
    for server in servers.values():
        await server.stop()


@pytest.fixture
async def oauth2_bridge(start_bridge, fakes):
    return await start_bridge(identity={"providers": [
        fakes["slack"].provider_config(trust_email=True),
        fakes["discord"].provider_config(trust_email=True)]})


async def sign_in(browser: Browser, fake: FakeOAuthServer, user: FakeUser) -> dict:
    fake.current = user
    async with browser.http.get(await browser.provider_redirect(fake.network),
                                allow_redirects=False) as response:
        assert response.status == 302, await response.text()
        callback = response.headers["Location"]
    status, body, _ = await browser.callback(callback)
    assert status == 200, body
    return body


async def test_discord_then_slack_with_the_same_verified_email(oauth2_bridge, fakes,
                                                                homeserver):
    web = Browser(homeserver.appservice_url)
    try:
        email = f"sam-{secrets.token_hex(3)}@example.org"
        body = await sign_in(web, fakes["discord"], FakeUser("80351110224678912", email))
        assert body["type"] == "pending_choice"
        status, _ = await web.create_account(body["pendingSessionId"])
        assert status == 200
        body = await sign_in(web, fakes["slack"], FakeUser("U024BE7LH", email))
        assert (body["type"], body["message"]) == ("provider_added",
                                                   "Slack added to your account")
        rows = await oauth2_bridge.storage.db.fetch(
            "SELECT provider_id, issuer, subject, account_id FROM login_identity")
        assert sorted((r["provider_id"], r["issuer"], r["subject"]) for r in rows) == [
            ("discord", "https://discord.com", "80351110224678912"),
            ("slack", "https://slack.com", "U024BE7LH")]
        assert len({r["account_id"] for r in rows}) == 1
    finally:
        await web.close()


async def test_unverified_discord_email_does_not_link(oauth2_bridge, fakes, homeserver):
    web = Browser(homeserver.appservice_url)
    try:
        email = f"kim-{secrets.token_hex(3)}@example.org"
        body = await sign_in(web, fakes["slack"], FakeUser("U1", email))
        await web.create_account(body["pendingSessionId"])
        body = await sign_in(web, fakes["discord"], FakeUser("42", email, verified=False))
        assert body["type"] == "pending_choice"
    finally:
        await web.close()
