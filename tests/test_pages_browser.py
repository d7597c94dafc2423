"""The web pages in a real headless Chromium: account choice -> sign in -> success, and
settings -> merge. Screenshots go to test-artifacts/."""

from __future__ import annotations

import pytest

from .support.chromium import ARTIFACTS, launch
from .support.oidc import person
from .support.servers import unavailable


@pytest.fixture
async def chromium():
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        unavailable("playwright is not installed (the project's test extra)")
    ARTIFACTS.mkdir(exist_ok=True)
    async with async_playwright() as playwright:
        browser = await launch(playwright)
        yield browser
        await browser.close()


async def provider_login(page, login: str) -> None:
    """The test provider's login form (any password works there)."""
    await page.fill('input[name="login"]', login)
    await page.fill('input[name="password"]', "any")
    await page.click('button[type="submit"]')


async def shot(page, name: str, db_uri: str) -> None:
    kind = "sqlite" if db_uri.startswith("sqlite") else "postgres"
    await page.screenshot(path=str(ARTIFACTS / f"{name}-{kind}.png"), full_page=True)


async def test_account_choice_sign_in_and_success(chromium, signin_bridge, homeserver, db_uri):
    context = await chromium.new_context()
    page = await context.new_page()
    google, github = person("pw-g"), person("pw-gh")
    base = homeserver.appservice_url

    await page.goto(f"{base}/auth/sign-in")
    await page.click("#signin-idp")
    await provider_login(page, google)
    await page.wait_for_url("**/auth/account-choice?session=*")
    assert "You've authenticated as" in await page.inner_text("main")
    await page.click("#create-new")
    await page.wait_for_url("**/account/settings*")
    assert "Your RelayForge account was created." in await page.inner_text("#notice")

    # Now GitHub, with another address: the choice page, then sign in with Google to link.
    await page.goto(f"{base}/auth/sign-in")
    await page.click("#signin-corp")
    await provider_login(page, github)
    await page.wait_for_url("**/auth/account-choice?session=*")
    await shot(page, "account-choice", db_uri)
    text = await page.inner_text("main")
    assert "Create new RelayForge account" in text
    assert "Sign in with existing account to link" in text
    await page.click("#link-idp")
    # Both test providers live on 127.0.0.1, so their session cookies collide: Google asks
    # again (a real provider would usually remember the browser).
    await page.wait_for_selector('#confirm-link, input[name="login"]')
    if await page.query_selector('input[name="login"]'):
        await provider_login(page, google)
    await page.wait_for_selector("#confirm-link")
    await page.click("#confirm-link")
    await page.wait_for_selector("#success")
    await shot(page, "linked", db_uri)
    assert "Accounts successfully linked!" in await page.inner_text("#success")
    assert "Your GitHub" in await page.inner_text("main")

    await page.goto(f"{base}/account/settings")
    assert "Sign-in methods: GitHub, Google" in await page.inner_text("#connected-providers")
    await context.close()


async def test_settings_merge(chromium, signin_bridge, homeserver, db_uri):
    base = homeserver.appservice_url
    first, second = await chromium.new_context(), await chromium.new_context()
    google, github = person("mg-g"), person("mg-gh")
    for context, provider, login in ((first, "idp", google), (second, "corp", github)):
        page = await context.new_page()
        await page.goto(f"{base}/auth/sign-in")
        await page.click(f"#signin-{provider}")
        await provider_login(page, login)
        await page.wait_for_url("**/auth/account-choice?session=*")
        await page.click("#create-new")
        await page.wait_for_url("**/account/settings*")

    page = first.pages[0]
    await page.goto(f"{base}/account/settings")
    await shot(page, "settings", db_uri)
    assert "Merge another account" in await page.inner_text("main")
    await page.click("#merge-corp")
    await provider_login(page, github)
    await page.wait_for_selector("#confirm-merge")
    # Before anything happens, the page shows both accounts.
    await shot(page, "merge-confirm", db_uri)
    merged, into = await page.inner_text("#merge-from"), await page.inner_text("#merge-into")
    assert "Sign-in providers: GitHub" in merged and "Sign-in providers: Google" in into
    assert "Profiles:" in merged and "Matrix users: none" in into
    await page.click("#confirm-merge")
    await page.wait_for_selector("#success")
    await shot(page, "merged", db_uri)
    assert "Accounts merged!" in await page.inner_text("#success")
    await page.goto(f"{base}/account/settings")
    assert "Sign-in methods: GitHub, Google" in await page.inner_text("#connected-providers")

    # Sign out: back at the sign-in page, and the settings need a sign-in again.
    await page.click("#sign-out")
    await page.wait_for_url("**/auth/sign-in")
    await page.goto(f"{base}/account/settings")
    await page.wait_for_url("**/auth/sign-in")
    assert "Sign in to RelayForge" in await page.inner_text("main")
    await first.close()
    await second.close()
