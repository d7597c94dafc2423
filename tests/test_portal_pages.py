"""The account portal without a real browser (aiohttp with its own cookies): forms without
this browser's token are refused, another person's ids are not found (the same answer as an
id that never existed), the last sign-in method stays, adding one proves it at the provider,
and every refusal a browser gets is the styled page with a way back."""

from __future__ import annotations

import re
from html import unescape

import aiohttp
import pytest

from .support.oidc import person, sign_in_at_provider
from .support.web import UNLIMITED_WEB, Browser


@pytest.fixture
async def portal_bridge(start_bridge, oidc_providers):
    """The two test providers; people signed in with them alone may use the bridge ("*")."""
    idp, corp = oidc_providers["idp"], oidc_providers["corp"]
    return await start_bridge(permissions={"*": "user"}, identity={"providers": [
        idp.provider_config(trust_email=True, name="Google"),
        corp.provider_config(trust_email=True, name="GitHub"),
    ]}, extra={"security": UNLIMITED_WEB})


async def web_account(web: Browser, provider: str, login: str) -> str:
    """A new RelayForge account signed in in this browser; its account id."""
    status, body = await web.sign_in(provider, login)
    assert status == 200 and body["type"] == "pending_choice", body
    status, page = await web.create_account(body["pendingSessionId"])
    assert status == 200, page
    status, home = await web.get("/account")
    assert status == 200 and "Your account" in home
    return re.search(r'account\s*<span class="mono">([^<]+)</span>', home).group(1)


def message(page: str) -> str:
    found = re.search(r'<p id="error-message">([^<]*)</p>', page)
    assert found, page
    return unescape(found.group(1))


async def test_csrf_foreign_ids_and_styled_refusals(portal_bridge, browser):
    bridge = portal_bridge
    alice, bob = browser(), browser()
    alice_id = await web_account(alice, "idp", person("pa"))
    bob_id = await web_account(bob, "idp", person("pb"))
    alice_profiles = await bridge.storage.profiles.for_account(alice_id)
    bob_profiles = await bridge.storage.profiles.for_account(bob_id)
    bob_persona = await bridge.accounts.add_persona(
        bob_id, bob_profiles[0].name, platform="loopback", external_user_id="bob-remote",
        display_name="Bob", scopes=[], actor=bob_id)

    # `/` is the portal when signed in, the sign-in page otherwise.
    async with alice.http.get(f"{alice.bridge_url}/", allow_redirects=False) as r:
        assert r.status == 303 and r.headers["Location"] == "/account"
    async with aiohttp.ClientSession() as anonymous, anonymous.get(
            f"{alice.bridge_url}/", allow_redirects=False) as r:
        assert r.status == 303 and r.headers["Location"] == "/auth/sign-in"

    # A form without this browser's token, or with another browser's, changes nothing.
    status, page = await alice.post_form("/account/profiles", {"name": "Hobby"})
    assert status == 403 and "expired or was not sent from this browser" in message(page)
    assert 'id="back" href="/"' in page and "<style>" in page
    bobs_token = await bob.csrf("/account")
    status, page = await alice.post_form("/account/profiles",
                                         {"name": "Hobby", "csrf": bobs_token})
    assert status == 403
    assert [p.name for p in await bridge.storage.profiles.for_account(alice_id)] == [
        p.name for p in alice_profiles]
    # With its own token it works, and the next page says so in the bot's words.
    token = await alice.csrf("/account")
    status, page = await alice.post_form("/account/profiles", {"name": "Hobby",
                                                               "csrf": token})
    assert status == 200
    assert 'Created the profile "Hobby"; you are invited to its space.' in unescape(page)
    # Bad input: the identity layer's refusal, as the bot words it.
    status, page = await alice.post_form("/account/profiles", {"name": "x" * 300,
                                                               "csrf": token})
    assert status == 400 and "A profile name must be" in message(page)

    # Mapping rules and capabilities: the same checks and words as the bot's.
    privat = next(p for p in alice_profiles if p.name == "Privat")
    status, page = await alice.post_form("/account/rules", {
        "csrf": token, "profile": privat.id, "network": "loopback", "remote": "room-1"})
    # (A portal room is a Matrix user's: an account signed in with a provider alone has none.)
    assert status == 400 and message(page).startswith("Mapping a room needs a Matrix user")
    status, page = await alice.post_form("/account/capabilities", {
        "csrf": token, "profile": privat.id, "effect": "allow", "actions": "send",
        "scope": "nonet"})
    assert status == 400 and message(page).startswith(
        '"nonet" is not a network this bridge runs')
    status, page = await alice.post_form("/account/capabilities", {
        "csrf": token, "profile": privat.id, "effect": "allow", "actions": "send",
        "scope": "loopback"})
    assert status == 200 and "RelayForge may now send as you (Privat) on loopback." in (
        unescape(page))
    (cap,) = await bridge.storage.capabilities.for_account(alice_id)
    status, page = await bob.post_form(f"/account/capabilities/{cap.id}/remove",
                                       {"csrf": bobs_token})
    assert status == 404 and len(await bridge.storage.capabilities.for_account(alice_id)) == 1
    status, page = await alice.get(f"/account/capabilities/{cap.id}/remove")
    assert status == 200 and 'id="confirm"' in page
    status, page = await alice.post_form(f"/account/capabilities/{cap.id}/remove",
                                         {"csrf": token})
    assert status == 200 and f"Removed {cap.id}." in page
    assert await bridge.storage.capabilities.for_account(alice_id) == []

    # The audit trail pages: 25 records a page, newest first, then older ones.
    for _ in range(25):
        await bridge.capabilities.change(alice_id, alice_id, "deny", "Jobb", "react",
                                         "loopback")
    status, first = await alice.get("/account/audit")
    older = re.search(r'href="(/account/audit\?before=\d+)"', first)
    assert status == 200 and older and first.count('<tr id="audit-') == 25
    assert "<strong>Capabilities changed</strong>: actions react; change deny; rule cap_" in first
    status, second = await alice.get(unescape(older.group(1)))
    seqs = [re.findall(r'<tr id="audit-(\d+)"', page) for page in (first, second)]
    assert seqs[1] and not set(seqs[0]) & set(seqs[1])
    assert min(map(int, seqs[0])) > max(map(int, seqs[1]))
    status, page = await alice.get(f"/account/audit?profile={privat.id}")
    assert page.count('<tr id="audit-') == 2  # Privat's own: allowed, then removed
    status, page = await alice.get(f"/account/audit?profile={bob_profiles[0].id}")
    assert status == 400

    # Another person's profile and linked account: the same 404 as ids that never existed.
    for path in (f"/account/profiles/{bob_profiles[0].id}/delete",
                 f"/account/personas/{bob_persona.id}/pause",
                 f"/account/personas/{bob_persona.id}/unlink"):
        made_up = re.sub(r"(prof|per)_[A-Za-z0-9_-]+", r"\1_doesnotexist", path)
        status, page = await alice.get(path)
        status2, page2 = await alice.get(made_up)
        assert status == status2 == 404 and message(page) == message(page2)
        status, page = await alice.post_form(path, {"csrf": token})
        assert status == 404 and message(page) == message(page2)
    status, page = await alice.post_form(f"/account/profiles/{bob_profiles[0].id}/rename",
                                         {"name": "Taken", "csrf": token})
    assert status == 404
    assert (await bridge.storage.personas.get(bob_persona.id)).status.value == "active"
    assert {p.name for p in await bridge.storage.profiles.for_account(bob_id)} == {
        p.name for p in bob_profiles}
    # Bob's own page is unaffected and lists his account.
    status, page = await bob.get("/account")
    assert "bob-remote" in page and f'id="status-{bob_persona.id}">active' in page

    # Unknown pages and methods are styled pages too; API clients still get JSON.
    status, page = await alice.get("/account/nothing-here")
    assert status == 404 and 'id="back"' in page
    async with alice.http.put(f"{alice.bridge_url}/account") as r:
        assert r.status == 405 and 'id="back"' in await r.text()
    async with alice.http.get(f"{alice.bridge_url}/account/nothing-here",
                              headers={"Accept": "application/json"}) as r:
        assert r.status == 404 and (await r.json())["errcode"] == "M_UNRECOGNIZED"


async def test_sign_in_methods_add_and_never_the_last(portal_bridge, browser):
    bridge = portal_bridge
    web = browser()
    account = await web_account(web, "idp", person("pm"))
    status, page = await web.get("/account/sign-in-methods")
    assert status == 200 and "Google" in page and "Your only way to sign in" in page
    (identity,) = await bridge.storage.identities.for_account(account)
    from bridge.web.portal_account import method_id

    mid = method_id(identity)
    token = await web.csrf("/account/sign-in-methods")
    status, page = await web.post_form(f"/account/sign-in-methods/{mid}/remove",
                                       {"csrf": token})
    assert status == 400 and "last way to sign in" in message(page)
    assert len(await bridge.storage.identities.for_account(account)) == 1

    # Add GitHub: proven at the provider, back on the methods page, now removable.
    async with web.http.get(f"{web.bridge_url}/account/sign-in-methods/add/corp",
                            allow_redirects=False) as r:
        assert r.status == 303 and r.headers["Location"] == "/oauth/corp/start?purpose=add"
    start = await web.provider_redirect("corp", "add")
    callback = await sign_in_at_provider(web.http, start, person("pm-gh"), web.bridge_url)
    async with web.http.get(callback) as r:
        page = await r.text()
        assert r.status == 200 and r.url.path == "/account/sign-in-methods", page
    assert "GitHub" in page and "Your only way to sign in" not in page
    # Still one session: the one the new sign-in replaced in this browser ended.
    status, page = await web.get("/account/sessions")
    assert page.count('<tr id="session-') == 1
    status, page = await web.post_form(f"/account/sign-in-methods/{mid}/remove",
                                       {"csrf": token})
    assert status == 200 and "Removed Google as a way to sign in" in page
    remaining = await bridge.storage.identities.for_account(account)
    assert [i.provider_id for i in remaining] == ["corp"]
    # GitHub is now the last one.
    status, page = await web.post_form(
        f"/account/sign-in-methods/{method_id(remaining[0])}/remove", {"csrf": token})
    assert status == 400 and "last way to sign in" in message(page)


async def matrix_session(user, homeserver, web: Browser) -> None:
    """Sign the browser in as a Matrix user with the bot's login link."""
    room = await user.open_management_room(homeserver.bot_mxid)
    await user.send_text(room, "login-link")
    text = await user.wait_for_notice(room, homeserver.bot_mxid, "/auth/matrix?token=")
    status, _ = await web.matrix_sign_in(text.rsplit("token=", 1)[1].strip())
    assert status == 200


async def test_oauth_network_goes_to_its_page_and_back_to_the_portal_for_consent(
        start_bridge, new_user, homeserver, browser):
    from tests.fakes.slack import FakeSlack
    from tests.fakes.slack.scenario import build_world

    from .support.slack import open_in_browser, open_start_link, slack_settings

    async with FakeSlack() as slack:
        world = build_world(slack)
        callback = f"{homeserver.appservice_url}/link/slack/callback"
        bridge = await start_bridge(extra={"networks": {"slack": slack_settings(slack,
                                                                                callback)}})
        alice, web = await new_user("alice"), browser()
        await matrix_session(alice, homeserver, web)
        account = await bridge.storage.accounts.by_mxid(alice.mxid)
        jobb = await bridge.storage.profiles.by_name(account.id, "Jobb")
        token = await web.csrf("/account/link")
        async with web.http.post(f"{web.bridge_url}/account/link", data={
                "csrf": token, "network": "slack", "profile": jobb.id, "address": ""},
                allow_redirects=False) as r:
            assert r.status == 303
            start = r.headers["Location"]
        assert start.startswith(f"{web.bridge_url}/link/slack/start?flow=")
        slack.sign_in(world.alice)
        _, authorize = await open_start_link(web.http, start)
        _, _, back = await open_in_browser(authorize)
        async with web.http.get(back) as r:
            page = await r.text()
        # Back in the portal, the bridge's consent text before anything is linked.
        assert r.status == 200 and 'id="consent-yes"' in page, page
        assert "Reply yes to link" in unescape(page)
        assert await bridge.storage.personas.for_profile(jobb.id) == []
        flow = unescape(re.search(r'name="flow" value="([^"]+)"', page).group(1))
        status, page = await web.post_form("/account/link/step", {
            "csrf": token, "flow": flow, "field": "consent", "answer": "yes",
            "network": "slack", "profile": ""})
        assert status == 200 and f"Linked slack:{world.team.id}/{world.alice.id}." in (
            unescape(page))
        (persona,) = await bridge.storage.personas.for_profile(jobb.id)
        assert persona.platform == "slack" and persona.status.value == "active"
