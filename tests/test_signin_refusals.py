"""Every way a sign-in or link can be abused is refused, and leaves the accounts unchanged."""

from __future__ import annotations

import statistics
import time

import pytest
from yarl import URL

from .support.oidc import person
from .test_signin import new_web_account

TABLES = ("account", "account_matrix_user", "login_identity", "profile", "persona",
          "account_merge")


async def snapshot(bridge) -> dict:
    db = bridge.storage.db
    state = {}
    for table in TABLES:
        rows = await db.fetch(f"SELECT * FROM {table}")
        # A profile's space is made in the background after first contact, on the
        # bridge's own schedule: not a change a refused request could have made.
        state[table] = sorted(tuple(sorted((k, v) for k, v in dict(r).items()
                                           if k != "space_mxid")) for r in rows)
    return state


def with_query(url: str, **changes: str | None) -> str:
    parsed = URL(url)
    query = {k: v for k, v in parsed.query.items()}
    for key, value in changes.items():
        if value is None:
            query.pop(key, None)
        else:
            query[key] = value
    return str(parsed.with_query(query))


@pytest.mark.parametrize("how", ["missing", "reused", "other browser", "other provider"])
async def test_bad_state_is_refused(signin_bridge, browser, how):
    web = browser()
    url = await web.callback_url("idp", person("mallory"))
    before = await snapshot(signin_bridge)
    if how == "missing":
        status, body, _ = await web.callback(with_query(url, state=None))
        assert "lacks its code or state" in body["error"]
    elif how == "reused":
        first, _, _ = await web.callback(url)
        assert first == 200
        before = await snapshot(signin_bridge)
        status, body, _ = await web.callback(url)
    elif how == "other browser":
        status, body, _ = await browser().callback(url)
    else:  # issuer mix-up: a state made for one provider, brought to another's callback
        status, body, _ = await web.callback(url.replace("/oauth/idp/", "/oauth/corp/"))
    assert status == 400 and body["success"] is False
    assert await snapshot(signin_bridge) == before
    if how in ("other browser", "other provider"):
        # Refused without using anything up: the browser that started it goes on.
        status, body, _ = await web.callback(url)
        assert (status, body["type"]) == (200, "pending_choice"), body


async def test_anonymous_sign_in_starts_store_nothing(signin_bridge, browser):
    count = "SELECT COUNT(*) FROM one_time_secret"
    before = await signin_bridge.storage.db.fetchval(count)
    for _ in range(5):
        assert "state=" in await browser().provider_redirect("idp")
    assert await signin_bridge.storage.db.fetchval(count) == before


async def test_another_browser_cannot_use_up_a_choice(signin_bridge, browser):
    web, other = browser(), browser()
    _, pending = await web.sign_in("idp", person("chooser"))
    _, own = await other.sign_in("corp", person("meddler"))
    csrf = await other.csrf(f"/auth/account-choice?session={own['pendingSessionId']}")
    status, _ = await other.post_form("/auth/account-choice/create",
                                      {"session": pending["pendingSessionId"], "csrf": csrf})
    assert status == 400
    status, page = await web.create_account(pending["pendingSessionId"])
    assert status == 200 and "Your RelayForge account was created." in page


async def test_reused_code_and_swapped_code_are_refused(signin_bridge, browser):
    web = browser()
    login = person("eve")
    first = await web.callback_url("idp", login)
    second = await web.callback_url("idp", login)
    status, body, _ = await web.callback(first)
    assert status == 200, body
    before = await snapshot(signin_bridge)
    # The first code again, with the second (valid, unused) state.
    replay = with_query(second, code=URL(first).query["code"])
    status, body, _ = await web.callback(replay)
    assert (status, body["error"]) == (400, "this authorization code was already used")
    # A code from another flow: its PKCE verifier and nonce belong to another state.
    third = await web.callback_url("idp", login)
    fourth = await web.callback_url("idp", login)
    swapped = with_query(third, code=URL(fourth).query["code"])
    status, body, _ = await web.callback(swapped)
    assert status == 400 and "did not accept the sign-in" in body["error"]
    assert await snapshot(signin_bridge) == before


async def test_altered_redirect_uri_is_refused_by_the_provider(signin_bridge, browser):
    web = browser()
    authorize = await web.provider_redirect("idp")
    evil = with_query(authorize, redirect_uri=URL(authorize).query["redirect_uri"] + "/x")
    async with web.http.get(evil, allow_redirects=False) as response:
        assert response.status == 400  # no code is issued for a redirect URI not registered
        assert "redirect_uri" in await response.text()


@pytest.mark.parametrize("side", ["new sign-in unverified", "existing unverified"])
async def test_unverified_email_never_links(signin_bridge, browser, side):
    email = f"victim-{side[:3]}-{id(browser)}@example.org"
    owner = browser()
    await new_web_account(owner, "idp", person("victim", email=email,
                                               verified=side != "existing unverified"))
    before = await snapshot(signin_bridge)
    attacker = browser()
    _, body = await attacker.sign_in("corp", person(
        "attacker", email=email, verified=side != "new sign-in unverified"))
    assert body["type"] == "pending_choice"
    assert await snapshot(signin_bridge) == before


async def test_identity_linked_elsewhere_meanwhile_is_refused(signin_bridge, browser):
    web = browser()
    google = person("al")
    await new_web_account(web, "idp", google)
    github = person("gh")
    status, pending = await web.sign_in("corp", github)
    # Meanwhile the same GitHub identity signs up in another browser.
    other = browser()
    await new_web_account(other, "corp", github)
    before = await snapshot(signin_bridge)
    status, handoff = await web.sign_in("idp", google, purpose="link")
    status, result = await web.post_json("/api/account/complete-linking", {
        "pendingSessionId": pending["pendingSessionId"],
        "existingSessionId": handoff["existingSessionId"]})
    assert (status, result["success"]) == (400, False)
    assert "already linked" in result["error"]
    assert await snapshot(signin_bridge) == before


@pytest.mark.parametrize("how", ["expired", "reused", "other browser"])
async def test_pending_session_expired_reused_or_foreign_is_refused(signin_bridge, browser,
                                                                    how):
    web = browser()
    google = person("al")
    await new_web_account(web, "idp", google)
    status, pending = await web.sign_in("corp", person("gh"))
    status, handoff = await web.sign_in("idp", google, purpose="link")
    body = {"pendingSessionId": pending["pendingSessionId"],
            "existingSessionId": handoff["existingSessionId"]}
    client = web
    if how == "expired":
        await signin_bridge.storage.db.execute(
            "UPDATE one_time_secret SET expires_at=1 WHERE kind='pending_choice'")
    elif how == "reused":
        status, result = await web.post_json("/api/account/complete-linking", body)
        assert status == 200
    else:
        client = browser()
    before = await snapshot(signin_bridge)
    status, result = await client.post_json("/api/account/complete-linking", body)
    assert (status, result["success"]) == (400, False)
    assert await snapshot(signin_bridge) == before
    if how == "other browser":
        status, result = await web.post_json("/api/account/complete-linking", body)
        assert (status, result["success"]) == (200, True)


async def test_forms_need_this_browsers_csrf_token(signin_bridge, browser):
    web = browser()
    status, pending = await web.sign_in("idp", person("x"))
    before = await snapshot(signin_bridge)
    status, _ = await web.post_form("/auth/account-choice/create",
                                       {"session": pending["pendingSessionId"], "csrf": "x"})
    assert status == 403
    assert await snapshot(signin_bridge) == before


async def test_no_account_enumeration(signin_bridge, browser):
    known = "known-person@example.org"
    await new_web_account(browser(), "idp", person("known", email=known))
    web = browser()

    async def answer(email: str) -> tuple[int, dict, dict, float]:
        # Unverified at the provider: the bridge must not link on it, whoever owns it.
        url = await web.callback_url("corp", person("probe", email=email, verified=False))
        started = time.perf_counter()
        status, body, response = await web.callback(url)
        elapsed = time.perf_counter() - started
        headers = {k: v for k, v in response.headers.items()
                   if k.lower() not in ("date", "content-length")}
        return status, body, headers, elapsed

    known_times, unknown_times = [], []
    for i in range(50):
        # Interleaved, alternating which goes first, so drift and warm-up hit both alike.
        order = [(known, known_times), (f"nobody-{i}@example.org", unknown_times)]
        answers = {}
        for email, times in order if i % 2 == 0 else reversed(order):
            status, body, headers, elapsed = await answer(email)
            times.append(elapsed)
            answers[email == known] = (status, body, headers)
        (k_status, k_body, k_headers), (u_status, u_body, u_headers) = (answers[True],
                                                                        answers[False])
        assert k_status == u_status == 200
        assert k_body["pendingSessionId"] != u_body["pendingSessionId"]
        assert {**k_body, "pendingSessionId": "x"} == {**u_body, "pendingSessionId": "x"}
        assert k_headers == u_headers
    # Timing: the medians differ by less than the noise, the interquartile range of all
    # the measurements together.
    quartiles = statistics.quantiles(known_times + unknown_times, n=4)
    noise = quartiles[2] - quartiles[0]
    gap = abs(statistics.median(known_times) - statistics.median(unknown_times))
    print(f"enumeration timing: median gap {gap * 1000:.2f} ms, noise (IQR) {noise * 1000:.2f} ms")
    assert gap <= max(noise, 0.002), (gap, noise)
