"""Signing in and linking with a real OpenID Connect provider: the design note's scenarios."""

from __future__ import annotations

import aiohttp

from .support.oidc import person
from .support.web import Browser


async def new_web_account(browser: Browser, provider: str, login: str) -> dict:
    """Sign in for the first time and choose "Create new RelayForge account"."""
    status, body = await browser.sign_in(provider, login)
    assert (status, body["type"]) == (200, "pending_choice"), body
    status, page = await browser.create_account(body["pendingSessionId"])
    assert status == 200 and "Your RelayForge account was created." in page
    return body


async def identities(bridge) -> list[tuple[str, str, str]]:
    rows = await bridge.storage.db.fetch(
        "SELECT provider_id, subject, account_id FROM login_identity ORDER BY provider_id")
    return [(r["provider_id"], r["subject"], r["account_id"]) for r in rows]


async def test_scenario_1_same_email_other_provider_is_added_and_person_told(
    signin_bridge, browser, new_user, homeserver
):
    bridge = signin_bridge
    alice = await new_user("alice")
    room = await alice.open_management_room(homeserver.bot_mxid)
    account = await bridge.accounts.for_matrix_user(alice.mxid)
    email = f"{alice.mxid[1:].split(':')[0]}@example.org"
    web = browser()
    # Alice links Google to her Matrix account: pending choice -> sign in with Matrix -> link.
    status, body = await web.sign_in("idp", person("alice-g", email=email))
    assert body["type"] == "pending_choice"
    await web.get(f"/auth/account-choice?session={body['pendingSessionId']}")
    await alice.send_text(room, "login-link")
    link = await alice.wait_for_notice(room, homeserver.bot_mxid, "/auth/matrix?token=")
    token = link.rsplit("token=", 1)[1].strip()
    status, page = await web.get(f"/auth/matrix?token={token}")
    assert f"Link Google to the account of {alice.mxid}?" in page
    status, page = await web.matrix_sign_in(token)
    assert "Accounts successfully linked!" in page

    # Later she signs in with GitHub, which verifies the same address: added automatically.
    other = browser()
    status, body = await other.sign_in("corp", person("alice-h", email=email))
    assert (status, body["type"]) == (200, "provider_added")
    assert body["message"] == "GitHub added to your account"
    assert {a for _, _, a in await identities(bridge)} == {account.id}
    notice = await alice.wait_for_notice(room, homeserver.bot_mxid, "was added to your")
    assert 'send "undo"' in notice
    await alice.send_text(room, "undo")
    await alice.wait_for_notice(room, homeserver.bot_mxid, "Removed")
    assert [p for p, _, _ in await identities(bridge)] == ["idp"]


async def test_scenario_2_different_email_links_after_signing_in_to_existing(
    signin_bridge, browser
):
    bridge = signin_bridge
    web = browser()
    google = person("alice", email=f"alice-{id(web)}@gmail.example")
    await new_web_account(web, "idp", google)
    [(_, _, account_id)] = await identities(bridge)

    # GitHub with a different address: the bridge must not guess. Pending choice...
    status, body = await web.sign_in("corp", person("alice-gh"))
    assert body == {"type": "pending_choice", "pendingSessionId": body["pendingSessionId"],
                    "redirectUrl": "/auth/account-choice"}
    # ... "Sign in with existing account to link": Google again, proving the account.
    status, handoff = await web.sign_in("idp", google, purpose="link")
    assert handoff["type"] == "existing_session"
    status, result = await web.post_json("/api/account/complete-linking", {
        "pendingSessionId": body["pendingSessionId"],
        "existingSessionId": handoff["existingSessionId"]})
    assert (status, result) == (200, {"success": True,
                                      "message": "Accounts linked successfully"})
    assert sorted(p for p, _, a in await identities(bridge) if a == account_id) == [
        "corp", "idp"]


async def test_scenario_3_accidental_second_account_is_merged(signin_bridge, browser):
    bridge = signin_bridge
    web = browser()
    google, github = person("al-g"), person("al-gh")
    first = await new_web_account(web, "idp", google)
    second_browser = browser()
    await new_web_account(second_browser, "corp", github)
    ids = {p: a for p, _, a in await identities(bridge)}
    await bridge.storage.accounts.set_credits(ids["idp"], 100)
    await bridge.storage.accounts.set_credits(ids["corp"], 150)
    del first

    status, signed_in = await web.sign_in("idp", google)
    assert signed_in["type"] == "signed_in"
    status, handoff = await web.sign_in("corp", github, purpose="merge")
    assert handoff["type"] == "merge_session"
    status, result = await web.post_json("/api/account/merge",
                                         {"mergeSessionId": handoff["mergeSessionId"]},
                                         token=signed_in["sessionId"])
    assert (status, result) == (200, {"success": True, "creditsMerged": 150,
                                      "providersAdded": ["corp"]})
    merged = await bridge.accounts.view(ids["idp"])
    assert merged.account.credits == 250
    assert sorted(i.provider_id for i in merged.identities) == ["corp", "idp"]
    assert (await bridge.storage.accounts.get(ids["corp"])).merged_into == ids["idp"]


async def test_login_link_asks_first_and_sign_out_ends_the_session(signin_bridge, browser,
                                                                   new_user, homeserver):
    alice = await new_user("alice")
    room = await alice.open_management_room(homeserver.bot_mxid)
    await alice.send_text(room, "login-link")
    link = await alice.wait_for_notice(room, homeserver.bot_mxid, "/auth/matrix?token=")
    token = link.rsplit("token=", 1)[1].strip()
    web, prefetcher = browser(), browser()
    # Opening the link (or a chat's link preview fetching it) only asks: nobody is signed
    # in, and the link is not used up.
    for who in (prefetcher, web):
        status, page = await who.get(f"/auth/matrix?token={token}")
        assert status == 200 and f"Sign in to RelayForge as {alice.mxid}?" in page
        status, page = await who.get("/account/settings")
        assert "Sign in to RelayForge" in page and "Account Management" not in page
    # The confirmation is a form of this browser: without its token, another site's form
    # signs nobody in.
    status, _ = await web.post_form("/auth/matrix", {"token": token, "csrf": "forged"})
    assert status == 403
    status, page = await web.matrix_sign_in(token)
    assert status == 200 and "Account Management" in page and 'id="sign-out"' in page
    status, page = await prefetcher.matrix_sign_in(token)
    assert status == 400 and "already used" in page  # it works once

    # Signing out: a forged form does nothing; the button ends the session, for good (its
    # cookie, copied before, no longer works either).
    status, _ = await web.post_form("/auth/sign-out", {"csrf": "forged"})
    assert status == 403
    assert "Account Management" in (await web.get("/account/settings"))[1]
    copied = {cookie.key: cookie.value for cookie in web.http.cookie_jar}
    status, page = await web.sign_out()
    assert status == 200 and "Sign in to RelayForge" in page
    status, page = await web.get("/account/settings")
    assert "Sign in to RelayForge" in page and "Account Management" not in page
    async with aiohttp.ClientSession(cookies=copied) as replay, replay.get(
            f"{homeserver.appservice_url}/account/settings") as r:
        assert r.url.path == "/auth/sign-in"
