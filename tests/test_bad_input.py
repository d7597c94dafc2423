"""Bad input never breaks the bridge: each defect the fuzzer found is a 4xx naming what is
wrong (never a 500), and a refused request leaves nothing behind (account, profile, space)."""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from tests.fakes.slack import FakeSlack

from .support.loopback import LoopbackConnector
from .support.oidc import person
from .support.slack import slack_settings
from .support.web import Browser
from .test_signin import new_web_account

SECRET = secrets.token_urlsafe(32)
V1 = "/_matrix/provision/v1"
JSON = "application/json"


class FailingHooks(LoopbackConnector):
    """A connector whose webhook hits a bug: what the bridge answers for anything a handler
    did not expect."""

    def web_routes(self) -> list[tuple[str, str, Any]]:
        async def broken(request: web.Request) -> web.Response:
            raise RuntimeError("a bug in a webhook")
        return [("POST", "/loopback/events", broken)]


@pytest.fixture
async def api_bridge(start_bridge, oidc_providers):
    return await start_bridge(
        connectors=[FailingHooks()], permissions={"*": "user"},
        identity={"providers": [oidc_providers["idp"].provider_config(name="Google")],
                  "max_profiles": 3},
        extra={"provisioning": {"shared_secret": SECRET},
               # Many requests from one address: the limits have tests of their own.
               "security": {"rate_limits": {name: {"burst": 100_000, "per_minute": 100_000}
                                            for name in ("web", "provisioning_network",
                                                         "provisioning_account")}}})


async def send(base: str, method: str, path: str, body: bytes | None = None, *,
               content_type: str | None = JSON, token: str | None = None,
               query: dict[str, str] | None = None, raw_query: str | None = None,
               http: aiohttp.ClientSession | None = None, accept: str | None = None
               ) -> tuple[int, CIMultiDict[str], Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if content_type:
        headers["Content-Type"] = content_type
    if accept:
        headers["Accept"] = accept
    url = URL(base + path)
    if raw_query is not None:
        url = URL(f"{base}{path}?{raw_query}", encoded=True)
    own = http is None
    session = http or aiohttp.ClientSession()
    try:
        async with session.request(method, url, data=body, headers=headers,
                                   params=query) as response:
            answer = await (response.json() if response.content_type == JSON
                            else response.text())
            return response.status, CIMultiDict(response.headers), answer
    finally:
        if own:
            await session.close()


# Each of the fuzzer's body defects, with what the bridge must answer instead of a 500.
BAD_BODIES: list[tuple[str, bytes, str, int, str]] = [
    ("invalid UTF-8", b'{"name": "\xff\xfe"}', JSON, 400, "M_NOT_JSON"),
    ("unknown charset", b'{"name": "x"}', "application/json; charset=klingon", 415,
     "RF_UNSUPPORTED_MEDIA_TYPE"),
    ("deep nesting", b"[" * 50_000 + b"]" * 50_000, JSON, 400, "M_NOT_JSON"),
    ("malformed multipart", b"--nope\r\ngarbage", "multipart/form-data; boundary=x", 415,
     "RF_UNSUPPORTED_MEDIA_TYPE"),
    ("lone surrogate", b'{"name": "\\ud800", "answers": {"a": "\\ud800"}, "network": '
     b'"\\ud800", "remote": "x", "mergeSessionId": "\\ud800", "pendingSessionId": "\\ud800",'
     b' "existingSessionId": "x"}', JSON, 400, "M_BAD_JSON"),
    ("NUL", b'{"name": "a\\u0000", "answers": {"a": "\\u0000"}, "network": "\\u0000", '
     b'"remote": "x", "mergeSessionId": "\\u0000", "pendingSessionId": "\\u0000", '
     b'"existingSessionId": "x"}', JSON, 400, "M_BAD_JSON"),
    ("NaN", b'{"name": NaN}', JSON, 400, "M_NOT_JSON"),
    ("no content type", b'{"name": "x"}', "", 415, "RF_UNSUPPORTED_MEDIA_TYPE"),
]


async def web_session(base: str, login: str) -> tuple[Browser, str]:
    web_browser = Browser(base)
    await new_web_account(web_browser, "idp", person(login))
    _, signed_in = await web_browser.sign_in("idp", person(login))
    return web_browser, signed_in["sessionId"]


async def test_malformed_bodies_are_refused_on_every_body_endpoint(api_bridge, homeserver,
                                                                   new_user):
    """Defects 1-5: invalid UTF-8, an unknown charset, deep nesting, a malformed multipart
    body and a lone surrogate (or NUL) each got a 500 on the profile, link, link step, rule,
    complete-linking and merge endpoints."""
    base = homeserver.appservice_url
    alice = await new_user("alice")
    me = {"user_id": alice.mxid}
    browser, session = await web_session(base, "bad-bodies")
    endpoints: list[tuple[str, dict[str, Any]]] = [
        (f"{V1}/profiles", {"token": SECRET, "query": me}),
        (f"{V1}/link/loopback", {"token": SECRET, "query": me}),
        (f"{V1}/link/steps/some-flow", {"token": SECRET, "query": me}),
        (f"{V1}/rules", {"token": SECRET, "query": me}),
        ("/api/account/complete-linking", {}),
        ("/api/account/merge", {"token": session, "http": browser.http}),
    ]
    try:
        for path, auth in endpoints:
            for what, body, content_type, status, errcode in BAD_BODIES:
                got, _, answer = await send(base, "POST", path, body,
                                            content_type=content_type, **auth)
                assert (got, answer["errcode"]) == (status, errcode), (path, what, answer)
                assert answer["error"], (path, what)
        # The merge API still merges nothing, and the person's profiles are as they were.
        status, _, account = await send(base, "GET", f"{V1}/account", None, token=SECRET,
                                        query=me)
        assert [p["name"] for p in account["profiles"]] == ["Jobb", "Privat"]
        # A form the page posts: strict UTF-8 after percent-decoding, the styled page.
        status, _, page = await send(base, "POST", "/auth/sign-out", b"csrf=%ff%fe",
                                     content_type="application/x-www-form-urlencoded",
                                     http=browser.http)
        assert status == 400 and 'class="error"' in page and "not UTF-8" in page
        status, _, page = await send(base, "POST", "/auth/sign-out", b"--x\r\n",
                                     content_type="multipart/form-data; boundary=x",
                                     http=browser.http)
        assert status == 415 and 'class="error"' in page
    finally:
        await browser.close()


async def test_query_path_and_header_are_checked_too(api_bridge, homeserver, new_user):
    base = homeserver.appservice_url
    alice = await new_user("alice")
    for raw in (f"user_id={alice.mxid}%00", "user_id=%ff%fe"):
        status, _, answer = await send(base, "GET", f"{V1}/whoami", token=SECRET,
                                       raw_query=raw)
        assert (status, answer["errcode"]) == (400, "M_INVALID_PARAM"), raw
    # A percent sign sent as %25 is text like any other (decoded once, not twice).
    status, _, answer = await send(base, "GET", f"{V1}/whoami", token=SECRET,
                                   raw_query="user_id=%25ff")
    assert (status, answer["errcode"]) == (403, "M_FORBIDDEN")
    status, _, answer = await send(base, "DELETE", f"{V1}/personas/a%00b", token=SECRET,
                                   query={"user_id": alice.mxid})
    assert (status, answer["errcode"]) == (400, "M_INVALID_PARAM")
    # A bearer token that is not text (raw bytes in the header) reaches no hash.
    status, answer = await raw_request(base, f"GET {V1}/whoami HTTP/1.1\r\n".encode()
                                       + b"Authorization: Bearer \xff\xfe\r\n")
    assert status == 400 and b"M_INVALID_PARAM" in answer


async def raw_request(base: str, head: bytes) -> tuple[int, bytes]:
    """A request as bytes (clients encode header values as UTF-8; a hostile one need not)."""
    url = URL(base)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    writer.write(head + f"Host: {url.host}\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    status_line, _, rest = data.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


async def counts(bridge) -> tuple[int, int, int]:
    db = bridge.storage.db
    rooms = await bridge.appservice.intent.get_joined_rooms()
    return (await db.fetchval("SELECT count(*) FROM account"),
            await db.fetchval("SELECT count(*) FROM profile"), len(rooms))


async def test_refused_user_ids_create_nothing(api_bridge, homeserver, new_user):
    """Defects 6 and 7: a user_id the homeserver would refuse (another server that is not
    there, @:, trailing space or newline, over-long, the bot's own), or one that is not a
    user of this homeserver (a case variant, an unregistered user, NUL, a replacement
    character) made an account, profiles and spaces, then often failed with a 500."""
    base = homeserver.appservice_url
    alice = await new_user("alice")
    domain = api_bridge.config["homeserver.domain"]
    localpart = alice.mxid[1:].split(":")[0]
    before = await counts(api_bridge)
    refused = [
        "@bob:127.0.0.1:1", "@:", f"@:{domain}", f"{alice.mxid} ", f"{alice.mxid}\n",
        "@" + "a" * 300 + f":{domain}", homeserver.bot_mxid,
        f"@{localpart.upper()}:{domain}", f"@{localpart}:{domain.upper()}",
        f"@never-registered-{secrets.token_hex(4)}:{domain}", f"@al\x00ice:{domain}",
        f"@al\ufffdice:{domain}", "alice", f"@loopback_someone:{domain}",
    ]
    for user_id in refused:
        for method, path, body in (("GET", "/whoami", None),
                                   ("POST", "/profiles", b'{"name": "Extra"}')):
            status, _, answer = await send(base, method, V1 + path, body, token=SECRET,
                                           query={"user_id": user_id})
            assert status in (400, 403), (user_id, status, answer)
            assert answer["errcode"] in ("M_FORBIDDEN", "M_INVALID_PARAM"), (user_id, answer)
    assert await counts(api_bridge) == before
    # The person the ID names is let in, and gets an account with its profiles.
    status, _, who = await send(base, "GET", f"{V1}/whoami", token=SECRET,
                                query={"user_id": alice.mxid})
    assert (status, who["matrix_users"]) == (200, [alice.mxid])
    accounts, profiles, _ = await counts(api_bridge)
    assert (accounts, profiles) == (before[0] + 1, before[1] + 2)


async def test_merge_checks_the_session_before_the_body(api_bridge, homeserver):
    """Defect 8: a wrong bearer token got 400 (or a 500) for its body, telling it how the
    body would have been read."""
    base = homeserver.appservice_url
    for body, content_type in ((b'{"mergeSessionId": "x"}', JSON), (b"\xff", JSON),
                               (b"[" * 50_000, JSON), (b"x", "text/plain")):
        status, _, answer = await send(base, "POST", "/api/account/merge", body,
                                       content_type=content_type, token="wrong-session")
        assert status == 403 and answer["success"] is False, answer


async def test_profiles_per_account_are_capped(api_bridge, homeserver, new_user):
    base = homeserver.appservice_url
    alice = await new_user("alice")
    me = {"user_id": alice.mxid}
    status, _, made = await send(base, "POST", f"{V1}/profiles", b'{"name": "Third"}',
                                 token=SECRET, query=me)
    assert status == 201 and made["space"]
    before = await counts(api_bridge)
    for name in ("Fourth", "Fifth"):
        status, _, answer = await send(base, "POST", f"{V1}/profiles",
                                       f'{{"name": "{name}"}}'.encode(), token=SECRET,
                                       query=me)
        assert status == 400 and "identity.max_profiles" in answer["error"]
    assert await counts(api_bridge) == before


async def test_unexpected_errors_are_500_with_a_correlation_id(api_bridge, homeserver, caplog):
    base = homeserver.appservice_url
    errors = api_bridge.metrics.http_server_errors.labels(route="/loopback/events")
    counted = errors._value.get()
    with caplog.at_level(logging.ERROR, logger="relayforge.web.requests"):
        status, headers, answer = await send(base, "POST", "/loopback/events", b"{}")
    assert status == 500 and answer["errcode"] == "M_UNKNOWN"
    correlation = answer["correlation_id"]
    assert headers["X-Correlation-Id"] == correlation and correlation in answer["error"]
    assert "Traceback" not in str(answer) and "a bug in a webhook" not in str(answer)
    [record] = [r for r in caplog.records if correlation in r.getMessage()]
    assert record.exc_info is not None  # the traceback is in the log, for the admin
    assert errors._value.get() == counted + 1


async def test_slack_events_api_refuses_malformed_signed_bodies(start_bridge, homeserver):
    """A body with a valid signature can still be malformed: 400, not a 500 (which Slack
    would retry)."""
    async with FakeSlack() as slack:
        slack.app.socket_mode = False
        slack.app.request_url = f"{homeserver.appservice_url}/slack/events"
        await start_bridge(extra={"networks": {"slack": slack_settings(
            slack, f"{homeserver.appservice_url}/link/slack/callback",
            inbound="events_api")}})
        for body in (b'{"type": "\xff"}', b"[" * 50_000, b'{"type": "\\ud800"}', b"[]"):
            delivery = await slack.events_http.post(slack.app, body)
            assert delivery.status == 400, (body[:20], delivery.response_text)
        verification = await slack.events_http.url_verification(slack.app, "still-works")
        assert verification.status == 200


async def test_every_route_answers_malformed_requests_without_a_server_error(
        api_bridge, homeserver):
    """Every route the bridge serves (pages, callbacks, APIs, webhooks, and any added later),
    sent each malformed shape: never a 500, and a page for a browser's request to a page."""
    base = homeserver.appservice_url
    bodies = [(b"\xff\xfe", "application/x-www-form-urlencoded"),
              (b"csrf=%ff", "application/x-www-form-urlencoded"),
              (b"--nope\r\n", "multipart/form-data; boundary=x"),
              (b"[" * 50_000, JSON), (b'{"a": "\\ud800"}', "application/json; charset=x")]
    queries = ["state=%ff&code=%00", "token=%ed%a0%80", "flow=a%00b&session=%c0%af"]
    routes = {(route.method, route.resource.canonical)
              for route in api_bridge.appservice.app.router.routes()
              if route.resource is not None and route.method in ("GET", "POST", "PUT", "DELETE")
              and route.resource.canonical != "/loopback/events"}
    assert ("POST", "/auth/account-choice/create") in routes and len(routes) > 20
    browser = Browser(base)
    try:
        for method, template in sorted(routes):
            path = re.sub(r"\{[^}]+\}", "loopback", template)
            cases = [(b"", None, q) for q in queries]
            if method in ("POST", "PUT"):
                cases += [(body, kind, None) for body, kind in bodies]
            for body, kind, query in cases:
                status, _, answer = await send(base, method, path, body or None,
                                               content_type=kind, raw_query=query,
                                               http=browser.http)
                assert status < 500, (method, path, body[:12], query, answer)
                if path.startswith(("/auth/", "/oauth/", "/link/", "/account/", "/admin/")) \
                        and status >= 400 and not (kind or "").startswith(JSON):
                    assert isinstance(answer, str) and "<!doctype html>" in answer, (
                        method, path, status, answer)
    finally:
        await browser.close()
