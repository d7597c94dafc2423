"""The MCP endpoint's authorisation, as the MCP specification asks: a 401 pointing at the
protected-resource metadata, the bridge as authorisation server (metadata, dynamic
registration, code + PKCE S256, exact redirect URIs, rotated refresh tokens, revocation), with
the `mcp` SDK's own client and the bridge's sign-in and consent pages; on both databases."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import sys
import time
from urllib.parse import parse_qs, urlparse

import httpx2
import pytest
from yarl import URL

from bridge.config import ConfigError

from .support.mcp import REDIRECT_URI, Agent, ChromiumConsenting, Consenting
from .test_pages_browser import ARTIFACTS, chromium  # noqa: F401 - the fixture

MCP_ON = {"mcp": {"enabled": True, "calls_per_minute": 3, "sends_per_minute": 1}}


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()
                                         ).decode().rstrip("=")
    return verifier, challenge


@pytest.fixture
async def person(start_bridge, new_user, homeserver, browser):
    """A bridge with the endpoint on, a person with a management room, and their browser."""
    bridge = await start_bridge(extra=MCP_ON)
    alice = await new_user("alice")
    room = await alice.open_management_room(homeserver.bot_mxid)
    await alice.wait_for_notice(room, homeserver.bot_mxid, "")  # the welcome: account made

    async def login_token() -> str:
        await alice.send_text(room, "login-link")
        link = await alice.wait_for_notice(room, homeserver.bot_mxid, "/auth/matrix?token=")
        return link.rsplit("token=", 1)[1].strip()

    return bridge, alice, room, browser(), login_token


async def test_discovery_registration_and_the_sdk_client(person, homeserver):
    bridge, _alice, _room, web, login_token = person
    url = homeserver.appservice_url
    async with httpx2.AsyncClient() as http:
        r = await http.post(f"{url}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
        assert r.status_code == 401
        challenge = r.headers["WWW-Authenticate"]
        assert f'resource_metadata="{url}/.well-known/oauth-protected-resource/mcp"' in challenge
        resource = (await http.get(f"{url}/.well-known/oauth-protected-resource/mcp")).json()
        assert resource["resource"] == f"{url}/mcp"
        assert resource["authorization_servers"] == [url]
        server = (await http.get(f"{url}/.well-known/oauth-authorization-server")).json()
        assert server["code_challenge_methods_supported"] == ["S256"]
        assert server["registration_endpoint"] == f"{url}/register"
        assert server["revocation_endpoint"] == f"{url}/revoke"
        assert set(server["scopes_supported"]) == {"read", "send", "edit", "delete", "react"}
        # A redirect URI that is neither https nor loopback http is refused at registration.
        r = await http.post(f"{url}/register", json={
            "client_name": "Evil", "redirect_uris": ["http://evil.example/cb"]})
        assert r.status_code == 400 and r.json()["error"] == "invalid_redirect_uri"

    consenting = Consenting(web, login_token)
    async with Agent(url, "Claude", consenting) as agent:
        answers = [await agent.call("list_profiles") for _ in range(4)]
    is_error, profiles = answers[0]
    assert not is_error, profiles
    assert [p["profile"] for p in profiles] == ["Jobb", "Privat"]
    # mcp.calls_per_minute: the fourth call in a row is refused, saying how long to wait.
    assert [e for e, _ in answers] == [False, False, False, True]
    assert "Too many calls: wait" in answers[3][1]
    page = consenting.consent_page
    assert 'id="agent">Claude' in page and "127.0.0.1:9" in page  # who asks, and where to
    tokens = agent.tokens.tokens
    assert tokens.expires_in == 600 and tokens.refresh_token
    # Nothing usable is stored: codes and tokens as digests, no client secret at all.
    rows = await bridge.storage.db.fetch("SELECT hash FROM agent_token")
    dumped = " ".join(r["hash"] for r in rows) + " ".join(
        r["metadata"] for r in await bridge.storage.db.fetch("SELECT metadata FROM agent_client"))
    for value in (tokens.access_token, tokens.refresh_token, agent.tokens.client.client_secret):
        assert value not in dumped
    assert hashlib.sha256(tokens.access_token.encode()).hexdigest() in dumped

    async with httpx2.AsyncClient() as http:
        ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
        for bad in ("rfa_" + secrets.token_urlsafe(32), tokens.access_token + "x",
                    tokens.refresh_token):
            r = await http.post(f"{url}/mcp", json=ping,
                                headers={"Authorization": f"Bearer {bad}"})
            assert r.status_code == 401, bad
        # An access token past its lifetime is refused, though its grant is fine.
        await bridge.storage.db.execute(
            "UPDATE agent_token SET expires_at=$1 WHERE hash=$2", int(time.time() * 1000) - 1,
            hashlib.sha256(tokens.access_token.encode()).hexdigest())
        r = await http.post(f"{url}/mcp", json=ping,
                            headers={"Authorization": f"Bearer {tokens.access_token}"})
        assert r.status_code == 401
    await bridge.storage.agents.prune()  # expired: gone; the refresh token stays
    assert [r["kind"] for r in await bridge.storage.db.fetch(
        "SELECT kind FROM agent_token WHERE kind <> 'code'")] == ["refresh"]

    # The person's agents on the web: listed, and revoked with a button (CSRF-checked).
    status, page = await web.get("/account/agents")
    assert status == 200 and "<td>Claude</td>" in page
    agent_id = re.search(r'name="agent" value="([^"]+)"', page).group(1)
    status, _ = await web.post_form("/account/agents/revoke", {"agent": agent_id})
    assert status == 403
    status, page = await web.post_form("/account/agents/revoke", {
        "agent": agent_id, "csrf": await web.csrf("/account/agents")})
    assert status == 200 and "Revoked" in page and "<td>Claude</td>" not in page
    async with httpx2.AsyncClient() as http:
        r = await http.post(f"{url}/token", data={
            "grant_type": "refresh_token", "refresh_token": tokens.refresh_token,
            "client_id": agent.tokens.client.client_id,
            "client_secret": agent.tokens.client.client_secret})
        assert r.status_code == 400 and r.json()["error"] == "invalid_grant"


async def test_codes_once_exact_redirects_rotated_refresh_and_revocation(person, homeserver):
    bridge, alice, _room, web, login_token = person
    url = homeserver.appservice_url
    consenting = Consenting(web, login_token)
    async with httpx2.AsyncClient() as http:
        client = (await http.post(f"{url}/register", json={
            "client_name": "Manual", "redirect_uris": [REDIRECT_URI],
            "token_endpoint_auth_method": "client_secret_post"})).json()
        creds = {"client_id": client["client_id"], "client_secret": client["client_secret"]}
        verifier, challenge = _pkce()
        authorize = {"response_type": "code", "client_id": client["client_id"],
                     "code_challenge": challenge, "code_challenge_method": "S256",
                     "state": "s1", "scope": "read send"}
        # A redirect URI that was not registered exactly is refused, and nobody is sent there.
        r = await http.get(f"{url}/authorize", params={
            **authorize, "redirect_uri": REDIRECT_URI + "/other"})
        assert r.status_code == 400 and "Location" not in r.headers
        # The person refuses: the client learns it (with its state), and nothing is granted.
        r = await http.get(f"{url}/authorize", params={**authorize,
                                                       "redirect_uri": REDIRECT_URI})
        consent = r.headers["Location"]
        await consenting.redirect(consent)  # signs the browser in on the way
        r = await http.get(f"{url}/authorize", params={**authorize,
                                                       "redirect_uri": REDIRECT_URI})
        consent = r.headers["Location"].removeprefix(url)
        status, page = await web.get(consent)
        assert f"Signed in as <strong>{alice.mxid}</strong>" in page
        fields = {"csrf": await web.csrf(consent), "decision": "refuse",
                  "request": parse_qs(urlparse(consent).query)["request"][0]}
        async with web.http.post(f"{url}/auth/agent", data=fields,
                                 allow_redirects=False) as refused:
            assert refused.status == 303
            assert refused.headers["Location"].startswith(
                f"{REDIRECT_URI}?error=access_denied")
            assert "state=s1" in refused.headers["Location"]
        status, _ = await web.post_form("/auth/agent", fields)
        assert status == 400  # answered already
        r = await http.get(f"{url}/authorize", params={**authorize,
                                                       "redirect_uri": REDIRECT_URI})
        assert r.status_code == 302
        await consenting.redirect(r.headers["Location"])
        code = consenting.result.code
        assert consenting.result.state == "s1"
        exchange = {"grant_type": "authorization_code", "code": code,
                    "redirect_uri": REDIRECT_URI, "code_verifier": verifier, **creds}
        # The wrong verifier (someone who saw the code, not the client) gets nothing.
        r = await http.post(f"{url}/token", data={**exchange, "code_verifier": "x" * 50})
        assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
        r = await http.post(f"{url}/token", data=exchange)
        assert r.status_code == 200, r.text
        first = r.json()
        assert first["scope"] == "read send"
        # The code again: refused, and the tokens it gave are revoked (one of the two uses
        # was not the client's).
        r = await http.post(f"{url}/token", data=exchange)
        assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
        ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
        r = await http.post(f"{url}/mcp", json=ping,
                            headers={"Authorization": f"Bearer {first['access_token']}",
                                     "Accept": "application/json, text/event-stream"})
        assert r.status_code == 401

        # Once more, properly: refresh tokens rotate, and the old one is spent.
        verifier, challenge = _pkce()
        r = await http.get(f"{url}/authorize", params={
            **authorize, "code_challenge": challenge, "redirect_uri": REDIRECT_URI})
        await consenting.redirect(r.headers["Location"])
        r = await http.post(f"{url}/token", data={
            **exchange, "code": consenting.result.code, "code_verifier": verifier})
        tokens = r.json()
        r = await http.post(f"{url}/token", data={
            "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], **creds})
        assert r.status_code == 200, r.text
        rotated = r.json()
        assert rotated["refresh_token"] != tokens["refresh_token"]
        r = await http.post(f"{url}/mcp", json=ping, headers={
            "Authorization": f"Bearer {rotated['access_token']}",
            "Accept": "application/json, text/event-stream"})
        assert r.status_code == 200, r.text
        # Revocation (RFC 7009) by the client ends the agent's access.
        r = await http.post(f"{url}/revoke", data={"token": rotated["refresh_token"], **creds})
        assert r.status_code == 200
        r = await http.post(f"{url}/mcp", json=ping, headers={
            "Authorization": f"Bearer {rotated['access_token']}",
            "Accept": "application/json, text/event-stream"})
        assert r.status_code == 401
        r = await http.post(f"{url}/token", data={
            "grant_type": "refresh_token", "refresh_token": rotated["refresh_token"], **creds})
        assert r.status_code == 400
    records = [json.loads(r.details) for r in await bridge.security.audit.latest(50)
               if r.event_type == "agent"]
    assert [r.get("reason") for r in records if r["change"] == "revoked"] == [
        "authorization code used twice", "revoked by its client"]


async def test_the_consent_page_in_chromium(person, homeserver, chromium, db_uri):  # noqa: F811
    """Sign-in and consent in a real browser, narrowing what the agent gets."""
    bridge, _alice, _room, _web, login_token = person
    kind = "sqlite" if db_uri.startswith("sqlite") else "postgres"
    context = await chromium.new_context()
    consenting = ChromiumConsenting(
        await context.new_page(), homeserver.appservice_url, login_token,
        untick=("action:send", "action:delete", "profile:" + (
            await bridge.storage.profiles.for_account(
                (await bridge.accounts.for_matrix_user(_alice.mxid)).id))[1].id),
        screenshot=str(ARTIFACTS / f"mcp-consent-{kind}.png"))
    async with Agent(homeserver.appservice_url, "Cursor", consenting) as agent:
        is_error, profiles = await agent.call("list_profiles")
        # Outside what the person granted on the page: refused, naming it.
        unsent = await agent.call("send_message", room="!nowhere:localhost", text="x")
        # mcp.sends_per_minute (1 here) counts every act asked for, refused or not.
        again = await agent.call("react", room="!nowhere:localhost", message_id="$x",
                                 emoji="x")
    assert not is_error, profiles
    assert unsent[0] and "You were not granted send" in unsent[1], unsent
    assert again[0] and "Too many sends: wait" in again[1], again
    assert [p["profile"] for p in profiles] == ["Jobb"]  # Privat was unticked
    assert sorted(agent.tokens.tokens.scope.split()) == ["edit", "react", "read"]
    await context.close()


async def test_enabled_without_the_sdk_says_what_to_install(start_bridge, monkeypatch):
    # As on a machine where the `mcp` extra was not installed.
    for name in [n for n in sys.modules if n == "mcp" or n.startswith("mcp.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, "bridge.mcp.endpoint", raising=False)
    with pytest.raises(ConfigError, match=r"mcp.enabled: the MCP SDK is not installed .*"
                       r"pip install 'relayforge\[mcp\]'"):
        await start_bridge(extra=MCP_ON)


async def test_back_after_sign_in_only_to_a_page_of_this_bridge(person, homeserver):
    """The consent page sends the browser to sign in and back; the way back is a path on the
    bridge, never another site (an open redirect would hand sign-ins to it)."""
    _bridge, _alice, _room, web, login_token = person
    url = URL(homeserver.appservice_url)
    for elsewhere in ("//evil.example/x", "https://evil.example/x", "/\\evil.example"):
        web.http.cookie_jar.update_cookies({"rf_return": elsewhere}, url)
        status, page = await web.matrix_sign_in(await login_token())
        assert status == 200 and "Account Management" in page, elsewhere
        assert 'id="agents" href="/account/agents"' in page  # the endpoint is on
    web.http.cookie_jar.update_cookies({"rf_return": "/account/agents"}, url)
    status, page = await web.matrix_sign_in(await login_token())
    assert status == 200 and "Your AI agents" in page


async def test_an_agent_of_someone_the_admin_cut_off_is_refused(start_bridge, new_user,
                                                                homeserver, browser):
    # The same levels as the bot: an agent acts for a person only while bridge.permissions
    # lets that person use the bridge, checked on every call.
    bridge = await start_bridge(extra=MCP_ON)
    alice = await new_user("alice")
    room = await alice.open_management_room(homeserver.bot_mxid)

    async def login_token() -> str:
        await alice.send_text(room, "login-link")
        link = await alice.wait_for_notice(room, homeserver.bot_mxid, "/auth/matrix?token=")
        return link.rsplit("token=", 1)[1].strip()

    async with Agent(homeserver.appservice_url, "Claude",
                     Consenting(browser(), login_token)) as agent:
        is_error, _ = await agent.call("list_profiles")
        assert not is_error
        await bridge.stop()
        await start_bridge(extra=MCP_ON, permissions={
            "*": "relay", "localhost": "user", alice.mxid: "relay"})
        is_error, answer = await agent.call("list_profiles")
    assert is_error
    assert '"agents" needs the user permission level' in str(answer)


async def test_client_registrations_are_limited_per_client_network(start_bridge, homeserver):
    await start_bridge(extra={"mcp": {**MCP_ON["mcp"], "registrations_per_hour": 2}})
    url = homeserver.appservice_url
    client = {"client_name": "Bot", "redirect_uris": [REDIRECT_URI]}
    async with httpx2.AsyncClient() as http:
        answers = [(await http.post(f"{url}/register", json=client)).status_code
                   for _ in range(3)]
        assert answers == [201, 201, 429]
        # Reading the metadata is not a registration.
        assert (await http.get(f"{url}/.well-known/oauth-authorization-server")
                ).status_code == 200
