"""Rate limits on sign-in, callbacks, provisioning calls, refused bearer tokens and merge
codes; the one-time table's pruning; metrics off the public listener; Secure cookies."""

from __future__ import annotations

import asyncio
import secrets
import time

import aiohttp
import pytest

from bridge.db.one_time_secret import digest
from bridge.sandbox.synapse import free_port
from bridge.security.ratelimit import Bucket, ExpiringCache, RateLimiter

from .support.api import PREFIX
from .support.matrix import DEADLINE

SECRET = secrets.token_urlsafe(32)
# Refills so slowly that nothing comes back during a test.
NEVER = 0.0001


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limits(**buckets: dict) -> dict:
    return {"security": {"rate_limits": buckets}}


async def get(url: str, **kwargs) -> tuple[int, dict | str, aiohttp.ClientResponse]:
    async with aiohttp.ClientSession() as http, http.get(url, allow_redirects=False,
                                                         **kwargs) as r:
        body = await (r.json() if r.content_type == "application/json" else r.text())
        return r.status, body, r


def assert_limited(status: int, body: dict, response: aiohttp.ClientResponse) -> None:
    assert status == 429, body
    assert body["errcode"] == "M_LIMIT_EXCEEDED"
    assert int(response.headers["Retry-After"]) >= 1
    assert body["retry_after_ms"] == int(response.headers["Retry-After"]) * 1000


# ---- the limiter itself (no wall clock: the clock is the test's) ---------------------------

def test_bucket_allows_a_burst_then_refills_over_time() -> None:
    clock = FakeClock()
    limiter = RateLimiter(Bucket(burst=3, per_minute=6), clock=clock)
    assert [limiter.take("net") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("net") == pytest.approx(10.0)  # one token every 10 s
    assert limiter.take("other") == 0.0  # keys are apart
    clock.now += 9.9
    assert limiter.take("net") > 0
    clock.now += 0.2
    assert limiter.take("net") == 0.0
    assert limiter.take("net") > 0


def test_limiter_memory_is_bounded_and_a_busy_key_stays() -> None:
    clock = FakeClock()
    limiter = RateLimiter(Bucket(burst=1, per_minute=1), max_keys=100, clock=clock)
    limiter.take("attacker")
    for n in range(1000):
        limiter.take(f"spoofed-{n}")
        limiter.take("attacker")  # used all along: never the oldest
    assert len(limiter) == 100
    assert limiter.wait("attacker") > 0


def test_expiring_cache_forgets_after_its_ttl_and_stays_bounded() -> None:
    clock = FakeClock()
    cache = ExpiringCache(ttl=60, max_keys=10, clock=clock)
    cache.put("token", "refused")
    clock.now += 59
    assert cache.get("token") == "refused"
    clock.now += 2
    assert cache.get("token") is None
    for n in range(50):
        cache.put(str(n), n)
    assert len(cache) == 10 and cache.get("0") is None and cache.get("49") == 49


# ---- the web layer ---------------------------------------------------------------------------

async def test_sign_in_starts_and_callbacks_are_limited_per_client_network(
        start_bridge, oidc_providers, homeserver):
    await start_bridge(
        identity={"providers": [oidc_providers["idp"].provider_config(name="Google")]},
        extra=limits(web={"burst": 3, "per_minute": NEVER}))
    base = homeserver.appservice_url
    for _ in range(3):
        status, _, _ = await get(f"{base}/oauth/idp/start")
        assert status == 303
    # A fresh session (new cookies) from the same network is limited all the same, and
    # a callback or an unknown provider gets the very same answer.
    answers = [await get(f"{base}/oauth/idp/start"),
               await get(f"{base}/oauth/idp/callback", params={"code": "c", "state": "s"}),
               await get(f"{base}/oauth/nobody/start"),
               await get(f"{base}/auth/sign-in")]
    for status, body, response in answers:
        assert_limited(status, body, response)
    assert len({b["error"] for _, b, _ in answers}) == 1


async def test_provisioning_limited_per_network_same_answer_for_known_and_unknown(
        start_bridge, homeserver, new_user):
    alice = await new_user("alice")
    await start_bridge(extra={"provisioning": {"shared_secret": SECRET},
                              **limits(provisioning_network={"burst": 3,
                                                             "per_minute": NEVER})})
    url = f"{homeserver.appservice_url}{PREFIX}/whoami"
    auth = {"Authorization": f"Bearer {SECRET}"}
    for _ in range(3):
        status, _, _ = await get(url, params={"user_id": alice.mxid}, headers=auth)
        assert status == 200
    known = await get(url, params={"user_id": alice.mxid}, headers=auth)
    unknown_user = await get(url, params={"user_id": "@nobody-here:localhost"}, headers=auth)
    unknown_token = await get(url, headers={"Authorization": "Bearer not-a-token"})
    for status, body, response in (known, unknown_user, unknown_token):
        assert_limited(status, body, response)
    assert known[1]["error"] == unknown_user[1]["error"] == unknown_token[1]["error"]
    # The API document says so.
    status, document, _ = await get(f"{homeserver.appservice_url}{PREFIX}/openapi.json")
    assert "429" in document["paths"][f"{PREFIX}/whoami"]["get"]["responses"]


async def test_provisioning_limited_per_account(start_bridge, homeserver, new_user):
    alice, bob = await new_user("alice"), await new_user("bob")
    await start_bridge(extra={"provisioning": {"shared_secret": SECRET},
                              **limits(provisioning_account={"burst": 2,
                                                             "per_minute": NEVER})})
    url = f"{homeserver.appservice_url}{PREFIX}/whoami"
    auth = {"Authorization": f"Bearer {SECRET}"}
    statuses = [(await get(url, params={"user_id": alice.mxid}, headers=auth))[0]
                for _ in range(3)]
    assert statuses == [200, 200, 429]
    # Someone else from the same network goes on.
    status, who, _ = await get(url, params={"user_id": bob.mxid}, headers=auth)
    assert (status, who["matrix_users"]) == (200, [bob.mxid])


async def test_refused_bearer_tokens_are_remembered_and_limited(start_bridge, homeserver,
                                                                new_user):
    alice = await new_user("alice")
    bridge = await start_bridge(extra={"provisioning": {"shared_secret": SECRET},
                                       **limits(unknown_tokens={"burst": 3,
                                                                "per_minute": NEVER})})
    url = f"{homeserver.appservice_url}{PREFIX}/whoami"
    working = {"Authorization": f"Bearer {SECRET}"}
    assert (await get(url, params={"user_id": alice.mxid}, headers=working))[0] == 200

    def refusals(how: str) -> float:
        return bridge.metrics.registry.get_sample_value(
            "relayforge_bearer_refusals_total", {"how": how}) or 0

    # The same unknown token again and again: looked up (a homeserver call) once.
    for _ in range(5):
        status, body, _ = await get(url, headers={"Authorization": "Bearer same-unknown"})
        assert (status, body["errcode"]) == (401, "M_UNKNOWN_TOKEN")
    assert (refusals("checked"), refusals("cached")) == (1, 4)
    # New unknown tokens: each costs a look-up, so the network is held off after a few.
    for n in range(2):
        status, _, _ = await get(url, headers={"Authorization": f"Bearer guess-{n}"})
        assert status == 401
    assert_limited(*await get(url, headers={"Authorization": "Bearer guess-2"}))
    assert refusals("checked") == 3
    # A credential seen working goes on.
    assert (await get(url, params={"user_id": alice.mxid}, headers=working))[0] == 200


async def test_wrong_merge_codes_are_limited(start_bridge, homeserver, new_user):
    alice_work, alice_home = await new_user("alicework"), await new_user("alicehome")
    bridge = await start_bridge(extra=limits(merge_confirm={"burst": 2, "per_minute": NEVER}))
    bot = homeserver.bot_mxid
    work_room = await alice_work.open_management_room(bot)
    home_room = await alice_home.open_management_room(bot)
    await alice_work.send_text(work_room, "merge start")
    text = await alice_work.wait_for_notice(work_room, bot, "Merge code:")
    code = text.split("Merge code: ")[1].split()[0]
    for wrong in ("AAAA-AAAA", "BBBB-BBBB"):
        await alice_home.send_text(home_room, f"merge confirm {wrong}")
        await alice_home.wait_for_notice(home_room, bot, "unknown, expired or already used")
    await alice_home.send_text(home_room, "merge confirm CCCC-CCCC")
    refused = await alice_home.wait_for_notice(home_room, bot, "Too many wrong merge codes")
    assert "try again in" in refused
    # The right code now is refused too, and is not used up.
    await alice_home.send_text(home_room, f"merge confirm {code}")
    await alice_home.wait_for_notice(home_room, bot, "Too many wrong merge codes")
    home = await bridge.accounts.for_matrix_user(alice_home.mxid)
    assert (await bridge.storage.accounts.get(home.id)).status.value == "active"
    assert await bridge.storage.one_time.peek("merge_code", code) is not None


# ---- growth, metrics, cookies ---------------------------------------------------------------

async def test_expired_one_time_values_are_pruned_while_running(start_bridge):
    bridge = await start_bridge(extra={"database": {"prune_interval_seconds": 0.2}})
    one_time = bridge.storage.one_time
    expired = await one_time.issue("oauth_state", -1)
    live = await one_time.issue("oauth_state", 3600)
    db = bridge.storage.db

    async def count(value: str) -> int:
        return await db.fetchval("SELECT COUNT(*) FROM one_time_secret WHERE hash=$1",
                                 digest(value))

    assert await count(expired) == 1
    deadline = time.monotonic() + DEADLINE
    while await count(expired):
        assert time.monotonic() < deadline, "the expired value was never removed"
        await asyncio.sleep(0.1)
    assert await count(live) == 1
    assert await one_time.peek("oauth_state", live) is not None


async def test_metrics_on_their_own_listener_with_a_token(start_bridge, homeserver):
    port, token = free_port(), secrets.token_urlsafe(24)
    bridge = await start_bridge(extra={"metrics": {"listen": f"127.0.0.1:{port}",
                                                   "token": token}})
    status, _, _ = await get(f"{homeserver.appservice_url}/metrics")
    assert status == 404  # not on the public listener at all
    own = f"http://127.0.0.1:{port}/metrics"
    assert (await get(own))[0] == 401
    assert (await get(own, headers={"Authorization": "Bearer wrong"}))[0] == 401
    status, text, _ = await get(own, headers={"Authorization": f"Bearer {token}"})
    assert status == 200 and "relayforge_appservice_transactions" in text
    await bridge.stop()

    # Without a listener of its own, the public one asks for the token.
    await start_bridge(extra={"metrics": {"token": token}})
    public = f"{homeserver.appservice_url}/metrics"
    assert (await get(public))[0] == 401
    status, text, _ = await get(public, headers={"Authorization": f"Bearer {token}"})
    assert status == 200 and "relayforge_sends" in text


def _cookie_flags(response: aiohttp.ClientResponse) -> list[str]:
    return response.headers.getall("Set-Cookie", [])


async def test_cookies_are_secure_over_https(start_bridge, homeserver):
    page = f"{homeserver.appservice_url}/auth/sign-in"
    bridge = await start_bridge(extra={"security": {"anomaly": {
        "trusted_proxies": ["127.0.0.1/32"]}}})
    _, _, plain = await get(page)
    assert [c for c in _cookie_flags(plain) if "rf_browser" in c]
    assert not [c for c in _cookie_flags(plain) if "Secure" in c]
    _, _, proxied = await get(page, headers={"X-Forwarded-Proto": "https"})
    cookies = _cookie_flags(proxied)
    assert cookies and all("Secure" in c for c in cookies)
    await bridge.stop()

    # Nobody else's X-Forwarded-Proto is believed (no trusted proxies) ...
    bridge = await start_bridge()
    _, _, spoofed = await get(page, headers={"X-Forwarded-Proto": "https"})
    assert not [c for c in _cookie_flags(spoofed) if "Secure" in c]
    await bridge.stop()
    # ... and an https public URL makes every cookie Secure.
    await start_bridge(extra={"web": {"public_url": "https://bridge.example.org"}})
    _, _, https = await get(page)
    cookies = _cookie_flags(https)
    assert cookies and all("Secure" in c for c in cookies)
