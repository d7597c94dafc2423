"""Every page in real headless Chromium: axe-core finds no serious or critical violation, it
fits a 390 px screen, and screenshots at desktop width and 390 px go to test-artifacts/. Linking
a second sign-in method works with the keyboard alone (Tab and Enter). One bridge and one
Chromium per database."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
import pytest_asyncio

from bridge.db.capability import CapabilityRule
from bridge.db.login_identity import LoginIdentity
from bridge.db.mapping_rule import MappingRule

from .support.chromium import PageChecks, module_chromium, new_context, press_enter_on, tab_to
from .support.dashboard import DashboardEnv, dashboard_env, db_kind
from .support.mcp import REDIRECT_URI
from .support.oidc import person

pytestmark = pytest.mark.asyncio(loop_scope="module")
__all__ = ["dashboard_env", "db_kind", "module_chromium"]


# GET routes of the browser's paths that are not pages of their own (everything else must
# have been checked by the module's tests: a new page cannot be forgotten).
NOT_PAGES = {
    "/": "a redirect to the portal or the sign-in page",
    "/oauth/{provider}/start": "a redirect to the sign-in provider",
    "/oauth/{provider}/callback": "the provider's answer: a redirect to a checked page",
    "/account/sign-in-methods/add/{provider}": "a redirect to the sign-in provider",
    "/link/{network}/start": "OAuth networks only (Slack, Discord: their tests' fakes)",
    "/link/{network}/callback": "OAuth networks only (Slack, Discord: their tests' fakes)",
}
# Not the browser's: the appservice and provisioning APIs, health and metrics.
NOT_BROWSER = ("/_matrix/", "/metrics")


def unchecked_pages(app: Any, seen: list[str]) -> list[str]:
    missing = []
    for route in app.router.routes():
        canonical = route.resource.canonical if route.resource is not None else ""
        if route.method != "GET" or canonical in NOT_PAGES or canonical.startswith(NOT_BROWSER):
            continue
        pattern = re.compile(re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(canonical)) + "$")
        if not any(pattern.match(path) for path in seen):
            missing.append(canonical)
    return sorted(missing)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def checks(db_kind: str, dashboard_env: DashboardEnv, request: pytest.FixtureRequest
                 ) -> AsyncIterator[PageChecks]:
    made = PageChecks(db_kind)
    failed_before = request.session.testsfailed
    yield made
    made.write_report()
    # Only when every test here passed: a failed one did not reach all its pages.
    if made.full and request.session.testsfailed == failed_before:
        missing = unchecked_pages(dashboard_env.bridge.appservice.app, made.paths)
        assert not missing, f"pages no test here checks: {missing}"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def admin_page(dashboard_env: DashboardEnv, module_chromium: Any
                     ) -> AsyncIterator[Any]:
    """A browser signed in as the admin (who is a person with a portal too)."""
    context = await new_context(module_chromium)
    yield await matrix_sign_in(dashboard_env, context, dashboard_env.admin)
    await context.close()


async def keyboard_provider_login(page: Any, login: str) -> None:
    """The test provider's login form, typed (not the bridge's page: no focus-ring rule)."""
    await page.wait_for_selector('input[name="login"]')
    await tab_to(page, 'input[name="login"]', ours=False)
    await page.keyboard.type(login)
    await tab_to(page, 'input[name="password"]', ours=False)
    await page.keyboard.type("any")
    await page.keyboard.press("Enter")


async def matrix_sign_in(env: DashboardEnv, context: Any, user: Any) -> Any:
    """Open the bot's login link in this browser and confirm."""
    page = await context.new_page()
    await page.goto(f"{env.base}/auth/matrix?token={await env.login_token(user)}")
    await page.click("#confirm-matrix-sign-in")
    await page.wait_for_url("**/account/**")
    return page


async def test_linking_a_sign_in_method_with_the_keyboard_alone(
        dashboard_env: DashboardEnv, module_chromium: Any, checks: PageChecks):
    env = dashboard_env
    context = await new_context(module_chromium)
    page = await context.new_page()
    google, github = person("kb-g"), person("kb-gh")

    # A Google account first: sign in, create the account.
    await page.goto(f"{env.base}/auth/sign-in")
    await checks.check(page, "sign-in")
    await press_enter_on(page, "#signin-idp")
    await keyboard_provider_login(page, google)
    await page.wait_for_url("**/auth/account-choice?session=*")
    await checks.check(page, "account-choice")
    await press_enter_on(page, "#create-new")
    await page.wait_for_url("**/account/**")
    assert "Your RelayForge account was created." in await page.inner_text("#notice")

    # Then GitHub, linked to it by signing in to the existing account: Tab and Enter only.
    await page.goto(f"{env.base}/auth/sign-in")
    await press_enter_on(page, "#signin-corp")
    await keyboard_provider_login(page, github)
    await page.wait_for_url("**/auth/account-choice?session=*")
    await press_enter_on(page, "#link-idp")
    # Both test providers live on 127.0.0.1, so their cookies collide: Google may ask again.
    await page.wait_for_selector('#confirm-link, input[name="login"]')
    if await page.query_selector('input[name="login"]'):
        await keyboard_provider_login(page, google)
    await page.wait_for_selector("#confirm-link")
    await checks.check(page, "confirm-link")
    await press_enter_on(page, "#confirm-link")
    await page.wait_for_selector("#success")
    await checks.check(page, "linked")
    assert "Accounts successfully linked!" in await page.inner_text("#success")

    await page.goto(f"{env.base}/account/settings")
    await checks.check(page, "settings")
    assert "GitHub, Google" in await page.inner_text("main")
    # A person without the admin level gets the refusal page (styled, with a way back).
    await page.goto(f"{env.base}/admin/dashboard")
    await checks.check(page, "admin-refused")
    assert "for bridge admins" in await page.inner_text("main")
    # An expired or foreign form: the error page.
    await page.goto(f"{env.base}/auth/matrix?token=not-a-token")
    await checks.check(page, "error")

    if not checks.full:
        # The merge pages are checked in the SQLite run; the merge itself on PostgreSQL is
        # tests/test_pages_browser.py::test_settings_merge (the same flow, clicked).
        await context.close()
        return
    # Another GitHub account of the person becomes a second account, merged into this one.
    other = await new_context(module_chromium)
    second = await other.new_page()
    await second.goto(f"{env.base}/auth/sign-in")
    await second.click("#signin-corp")
    await keyboard_provider_login(second, (merged := person("kb-m")))
    await second.wait_for_url("**/auth/account-choice?session=*")
    await second.click("#create-new")
    await second.wait_for_url("**/account/**")
    await other.close()
    await page.goto(f"{env.base}/account/settings")
    await press_enter_on(page, "#merge-corp")
    # The last sign-in at a provider in this browser was Google's (the shared cookie).
    await keyboard_provider_login(page, merged)
    await page.wait_for_selector("#confirm-merge")
    await checks.check(page, "merge-confirm")
    await press_enter_on(page, "#confirm-merge")
    await page.wait_for_selector("#success")
    await checks.check(page, "merged")
    await context.close()


async def test_support_dashboard_pages(dashboard_env: DashboardEnv, admin_page: Any,
                                       checks: PageChecks):
    env, page = dashboard_env, admin_page
    tag = secrets.token_hex(3)
    keep = await env.bridge.accounts.for_matrix_user(f"@keep{tag}:localhost")
    gone = await env.bridge.accounts.for_matrix_user(f"@gone{tag}:localhost")

    await page.goto(f"{env.base}/admin/holds")
    await checks.check(page, "admin-holds")
    await page.goto(f"{env.base}/admin/dashboard")
    await checks.check(page, "admin-dashboard")
    # The search with the keyboard: the labelled field, typed, Enter.
    await tab_to(page, "#q")
    await page.keyboard.type(tag.upper())
    await page.keyboard.press("Enter")
    await page.wait_for_selector("#results")
    await checks.check(page, "admin-results")
    await press_enter_on(page, f'a[href="/admin/accounts/{keep.id}"]')
    await page.wait_for_selector("#merge-from")
    await checks.check(page, "admin-account")

    await tab_to(page, "#merge-from")
    await page.keyboard.type(gone.id)
    await page.keyboard.press("Enter")
    await page.wait_for_selector("#admin-merge")
    await checks.check(page, "admin-merge-confirm")
    await press_enter_on(page, "#admin-merge")
    await page.wait_for_selector("#notice")
    assert f"Merged {gone.id} into {keep.id}" in await page.inner_text("#notice")
    await checks.check(page, "admin-account-merged")

    await press_enter_on(page, '[id^="unmerge-"]')
    await page.wait_for_selector("#admin-unmerge")
    await checks.check(page, "admin-unmerge-confirm")
    await press_enter_on(page, "#admin-unmerge")
    await page.wait_for_selector("#notice")
    assert re.search(r"Reversed merge merge_\S+", await page.inner_text("#notice"))

    # The bot's login link asks before it signs anyone in (opened, not confirmed here).
    await page.goto(f"{env.base}/auth/matrix?token={await env.login_token(env.admin)}")
    await page.wait_for_selector("#confirm-matrix-sign-in")
    await checks.check(page, "matrix-sign-in")


async def test_linking_a_network_in_the_portal_with_the_keyboard_alone(
        dashboard_env: DashboardEnv, admin_page: Any, checks: PageChecks):
    env, page = dashboard_env, admin_page
    password = secrets.token_urlsafe(12)
    jid = env.prosody.register(f"kb{secrets.token_hex(3)}", password)  # type: ignore
    await page.goto(f"{env.base}/")
    await page.wait_for_url("**/account")
    await checks.check(page, "portal-home")

    # The header's "Link a network", the address, the password, the consent: Tab and Enter
    # (and the typing of what the person knows).
    await press_enter_on(page, 'nav a[href="/account/link"]')
    await page.wait_for_selector("#link-start")
    await checks.check(page, "portal-link")
    assert await page.input_value("#link-network") == "xmpp"
    await tab_to(page, "#link-address")
    await page.keyboard.type(jid)
    await page.keyboard.press("Enter")
    await page.wait_for_selector("#answer")
    await checks.check(page, "portal-link-password")
    await tab_to(page, "#answer")
    await page.keyboard.type(password)
    await page.keyboard.press("Enter")
    await page.wait_for_selector("#consent-yes")
    await checks.check(page, "portal-link-consent")
    await press_enter_on(page, "#consent-yes")
    await page.wait_for_selector("#notice")
    assert f"Linked xmpp:{jid}." in await page.inner_text("#notice")
    await checks.check(page, "portal-home-linked")
    persona = await env.bridge.storage.personas.by_external("xmpp", jid)
    assert persona is not None and persona.status.value == "active"

    # An action of the linked account, confirmed with the keyboard too.
    await press_enter_on(page, f"#pause-{persona.id}")
    await page.wait_for_selector("#confirm")
    await checks.check(page, "portal-confirm-pause")
    await press_enter_on(page, "#confirm")
    await page.wait_for_selector("#notice")
    assert (await env.bridge.storage.personas.get(persona.id)).status.value == "paused"

    # A mapping rule, a capability and two more sign-in methods, as the bot or the sign-in
    # pages leave them, so those pages and their confirmations have something to show.
    storage = env.bridge.storage
    account = await storage.accounts.by_mxid(env.admin.mxid)
    profile = (await storage.profiles.for_account(account.id))[0]
    rule = MappingRule(f"rule_{secrets.token_hex(6)}", account.id, profile.id, "xmpp",
                       f"room{secrets.token_hex(3)}@conference.rf.test", None, False, False)
    assert await storage.rules.add(rule)
    capability = CapabilityRule(f"cap_{secrets.token_hex(6)}", account.id, profile.id, None,
                                "deny", ("send",), "xmpp", "*", "secret*")
    await storage.capabilities.add(capability)
    for provider in ("idp", "corp"):
        await storage.identities.add(LoginIdentity(
            f"https://{provider}.example", secrets.token_hex(8), provider, account.id,
            f"ada.{secrets.token_hex(3)}@example.org", True, True, "signin"))
    for path, name in (("/account/rules", "portal-rules"),
                       (f"/account/rules/{rule.id}/remove", "portal-confirm-remove-rule"),
                       (f"/account/capabilities/{capability.id}/remove",
                        "portal-confirm-remove-capability"),
                       ("/account/sign-in-methods", "portal-sign-in-methods"),
                       ("/account/sessions", "portal-sessions"),
                       ("/account/audit", "portal-audit"),
                       (f"/account/profiles/{profile.id}/delete",
                        "portal-confirm-delete-profile"),
                       ("/account/no-such-page", "portal-not-found")):
        await page.goto(f"{env.base}{path}")
        await checks.check(page, name)
    await page.goto(f"{env.base}/account/sign-in-methods")
    await press_enter_on(page, '[id^="remove-"]')
    await page.wait_for_selector("#confirm")
    await checks.check(page, "portal-confirm-remove-sign-in-method")


async def test_agent_consent_and_agents_pages(dashboard_env: DashboardEnv, admin_page: Any,
                                              checks: PageChecks):
    """The MCP endpoint's consent page (an agent registered as a client asks) and the list
    of the person's agents."""
    env, page = dashboard_env, admin_page
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{env.base}/register", json={
                "client_name": "Checker", "redirect_uris": [REDIRECT_URI]}) as r:
            assert r.status == 201, await r.text()
            client_id = (await r.json())["client_id"]
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(
        hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    await page.goto(f"{env.base}/authorize?" + urlencode({
        "response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT_URI,
        "code_challenge": challenge, "code_challenge_method": "S256", "state": "s",
        "scope": "read", "resource": f"{env.base}/mcp"}))
    await page.wait_for_selector("#allow")
    await checks.check(page, "agent-consent")
    await page.goto(f"{env.base}/account/agents")
    await checks.check(page, "portal-agents")
