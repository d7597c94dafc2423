"""The account portal in a real headless Chromium, against the session's Synapse and Prosody:
a person signs in with the bot's login link, links XMPP from the page (password, then the
bridge's consent), maps a group chat, pauses, resumes and revokes the account, reads the audit
trail, sees a second session and signs it out from the first, and signs out."""

from __future__ import annotations

import re
import shutil

import pytest

from .conftest import xmpp_extra
from .support.chromium import ARTIFACTS, CHROMIUM_FLAGS, PHONE
from .support.servers import unavailable
from .support.web import UNLIMITED_WEB

MUC = "conference.rf.test"


@pytest.fixture
async def chromium():
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        unavailable("playwright is not installed (the project's test extra)")
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        unavailable("Chromium is not installed (Debian package chromium)")
    ARTIFACTS.mkdir(exist_ok=True)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable,
                                                   args=CHROMIUM_FLAGS)
        yield browser
        await browser.close()


async def shot(page, name: str, db_uri: str) -> None:
    """The page at desktop width and at 390 px (nothing may be wider than the phone)."""
    kind = "sqlite" if db_uri.startswith("sqlite") else "postgres"
    await page.screenshot(path=str(ARTIFACTS / f"portal-{name}-{kind}.png"), full_page=True)
    desktop = page.viewport_size
    await page.set_viewport_size(PHONE)
    width = await page.evaluate("document.documentElement.scrollWidth")
    await page.screenshot(path=str(ARTIFACTS / f"portal-{name}-390-{kind}.png"),
                          full_page=True)
    await page.set_viewport_size(desktop)
    assert width <= PHONE["width"], f"{name} is {width}px wide at 390px"


async def sign_in(context, user, homeserver) -> object:
    """A browser signed in with a fresh login link from the bot."""
    room = await user.open_management_room(homeserver.bot_mxid)
    await user.send_text(room, "login-link")
    text = await user.wait_for_notice(room, homeserver.bot_mxid, "/auth/matrix?token=")
    link = re.search(r"(http\S+/auth/matrix\?token=\S+)", text).group(1)
    page = await context.new_page()
    await page.goto(link)
    await page.click("#confirm-matrix-sign-in")
    await page.wait_for_url("**/account/settings*")
    return page


async def confirm(page, button: str) -> str:
    """Press an action's button, then the confirmation page's; the notice that follows."""
    await page.click(button)
    await page.wait_for_selector("#confirm")
    await page.click("#confirm")
    await page.wait_for_selector("#notice")
    return await page.inner_text("#notice")


@pytest.fixture
async def portal_bridge(start_bridge, prosody):
    """XMPP on; this test walks through some forty pages in a minute from one client network,
    which is not a test of the web limit."""
    return await start_bridge(extra={**xmpp_extra(prosody), "security": UNLIMITED_WEB})


async def test_link_map_pause_resume_revoke_audit_and_sessions(
        chromium, portal_bridge, new_user, xmpp_peer, homeserver, db_uri):
    bridge = portal_bridge
    base = homeserver.appservice_url
    alice = await new_user("alice")
    alice_xmpp, bob = await xmpp_peer("alice"), await xmpp_peer("bob")
    await alice_xmpp.stop()  # only its credentials are needed: the bridge signs in as it

    first = await chromium.new_context()
    page = await sign_in(first, alice, homeserver)
    await page.goto(f"{base}/")
    await page.wait_for_url("**/account")
    assert alice.mxid in await page.inner_text("#signed-in-as")
    await shot(page, "home", db_uri)

    # Link XMPP from the page: network and profile, the password, then the consent.
    await page.click("nav >> text=Link a network")
    await page.select_option("#link-network", "xmpp")
    await page.select_option("#link-profile", label="Jobb")
    await page.fill("#link-address", alice_xmpp.jid)
    await page.click("#link-start")
    await page.wait_for_selector("#answer")
    assert await page.get_attribute("#answer", "type") == "password"
    assert await page.inner_text('label[for="answer"]')
    await page.fill("#answer", alice_xmpp.password)
    await page.click("#answer-submit")
    await page.wait_for_selector("#consent-text")
    consent = await page.inner_text("#consent-text")
    assert f"Verified {alice_xmpp.jid} on xmpp" in consent
    assert "If you agree, RelayForge will" in consent and "Reply yes to link" in consent
    assert alice_xmpp.password not in await page.content()
    # Nothing is linked before the answer.
    assert await bridge.storage.personas.by_external("xmpp", alice_xmpp.jid) is None
    await shot(page, "consent", db_uri)
    await page.click("#consent-yes")
    await page.wait_for_selector("#notice")
    assert f"Linked xmpp:{alice_xmpp.jid}." in await page.inner_text("#notice")
    persona = await bridge.storage.personas.by_external("xmpp", alice_xmpp.jid)
    assert persona is not None
    assert await page.inner_text(f"#status-{persona.id}") == "active"

    # Map a group chat into Jobb: the portal room's invite arrives in Matrix.
    muc = f"portal{bob.nick}@{MUC}"
    await bob.join(muc)
    await page.click("nav >> text=Mapping rules")
    account = await bridge.storage.accounts.by_mxid(alice.mxid)
    jobb = await bridge.storage.profiles.by_name(account.id, "Jobb")
    # The bot's checks and words: Privat has no XMPP account.
    privat = await bridge.storage.profiles.by_name(account.id, "Privat")
    await page.click(f"#add-rule-{privat.id} summary")
    await page.select_option(f"#rule-network-{privat.id}", "xmpp")
    await page.fill(f"#rule-remote-{privat.id}", muc)
    await page.click(f"#add-rule-submit-{privat.id}")
    await page.wait_for_selector("#error-message")
    assert (await page.inner_text("#error-message")).startswith(
        'Link a xmpp account in the profile "Privat" first')
    await page.click("#back")
    await page.click("nav >> text=Mapping rules")
    await page.click(f"#add-rule-{jobb.id} summary")
    await page.select_option(f"#rule-network-{jobb.id}", "xmpp")
    await page.fill(f"#rule-remote-{jobb.id}", muc)
    await page.click(f"#add-rule-submit-{jobb.id}")
    await page.wait_for_selector("#notice")
    assert f"Mapped xmpp {muc} into Jobb" in await page.inner_text("#notice")
    await alice.wait_for_invite()
    assert muc in await page.inner_text(f"#rules-{jobb.id}")
    await shot(page, "rules", db_uri)
    # A second rule, removed again (confirmed first).
    other_room = f"other{bob.nick}@{MUC}"
    await page.click(f"#add-rule-{jobb.id} summary")
    await page.select_option(f"#rule-network-{jobb.id}", "xmpp")
    await page.fill(f"#rule-remote-{jobb.id}", f"other{bob.nick}@{MUC}")
    await page.click(f"#add-rule-submit-{jobb.id}")
    await page.wait_for_selector("#notice")
    rule = next(r for r in await bridge.storage.rules.for_account(account.id)
                if r.remote == other_room)
    assert await confirm(page, f"#remove-{rule.id}") == (
        f"Removed the rule for xmpp {other_room}.")
    assert other_room not in await page.inner_text(f"#rules-{jobb.id}")

    # Pause, resume and revoke, each confirmed, each at once.
    await page.click("#home")
    assert await confirm(page, f"#pause-{persona.id}") == (
        f"xmpp:{alice_xmpp.jid} is now paused.")
    assert await page.inner_text(f"#status-{persona.id}") == "paused"
    assert (await bridge.storage.personas.get(persona.id)).status.value == "paused"
    assert await confirm(page, f"#resume-{persona.id}") == (
        f"xmpp:{alice_xmpp.jid} is now active.")
    assert await confirm(page, f"#revoke-{persona.id}") == (
        f"xmpp:{alice_xmpp.jid} is now revoked.")
    assert await page.inner_text(f"#status-{persona.id}") == "revoked"
    assert (await bridge.storage.personas.get(persona.id)).status.value == "revoked"

    # The audit trail, in words, filterable.
    await page.click("nav >> text=Audit trail")
    trail = await page.inner_text("#audit")
    for said in ("Linked", "mapping rule added", "Paused", "Resumed", "Revoked"):
        assert said in trail, trail
    await page.select_option("#audit-kind", "pause")
    await page.click("#audit-filter")
    await page.wait_for_url("**/account/audit?*kind=pause*")
    filtered = await page.inner_text("#audit")
    assert "Paused" in filtered and "Revoked" not in filtered
    await shot(page, "audit", db_uri)

    # A second browser: listed here, and signed out from here.
    second = await chromium.new_context()
    other = await sign_in(second, alice, homeserver)
    await page.click("nav >> text=Sessions")
    rows = page.locator("#sessions tbody tr")
    assert await rows.count() == 2
    assert "This browser" in await page.inner_text("#sessions")
    await shot(page, "sessions", db_uri)
    await page.click("#sessions button[id^=end-]")
    await page.wait_for_selector("#notice")
    assert await page.locator("#sessions tbody tr").count() == 1
    await other.goto(f"{base}/account")
    await other.wait_for_url("**/auth/sign-in")

    # Sign out: the portal needs a sign-in again.
    await page.click("#sign-out")
    await page.wait_for_url("**/auth/sign-in")
    await page.goto(f"{base}/account")
    await page.wait_for_url("**/auth/sign-in")
    await first.close()
    await second.close()
