"""Headless Chromium through Playwright for the pages' tests, and the checks every page gets:
axe-core (tests/a11y, pinned by its package-lock.json) finds no serious or critical violation,
a screenshot at desktop width and at 390 px goes to test-artifacts/, and nothing is wider than
a 390 px screen."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest_asyncio

from .servers import unavailable

ROOT = Path(__file__).resolve().parent.parent.parent
ARTIFACTS = Path(os.environ.get("RELAYFORGE_ARTIFACTS", ROOT / "test-artifacts"))
# Screenshots of every page, and axe's report of the lesser (moderate, minor) findings.
PAGES = ARTIFACTS / "pages"
AXE = ROOT / "tests" / "a11y" / "node_modules" / "axe-core" / "axe.min.js"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
BLOCKING = ("serious", "critical")

_RUN_AXE = """async () => {
  const result = await axe.run(document, {resultTypes: ["violations"]});
  return result.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
    nodes: v.nodes.slice(0, 5).map(n => n.target.join(" "))}));
}"""
# A focused element a keyboard user can see: Chromium's own ring or the stylesheet's outline.
_FOCUS_SHOWN = """() => {
  const el = document.activeElement;
  if (!el || el === document.body) return false;
  const style = getComputedStyle(el);
  return (style.outlineStyle !== "none" && parseFloat(style.outlineWidth) > 0)
    || style.boxShadow !== "none";
}"""


async def launch(playwright: Any) -> Any:
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        unavailable("Chromium is not installed (Debian package chromium)")
    return await playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def module_chromium() -> AsyncIterator[Any]:
    """One Chromium for a module's tests (each test opens contexts of its own)."""
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        unavailable("playwright is not installed (the project's test extra)")
    if not AXE.is_file():
        unavailable("axe-core is not installed (scripts/test runs npm ci in tests/a11y)")
    PAGES.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as playwright:
        browser = await launch(playwright)
        yield browser
        await browser.close()


async def new_context(browser: Any) -> Any:
    # bypass_csp: the checker is injected as a script, whatever the page's policy allows.
    return await browser.new_context(viewport=DESKTOP, bypass_csp=True)


class PageChecks:
    """Runs the checks on each page a test reaches and remembers which pages it saw.

    The markup does not depend on the database, so axe and the screenshots (about a second a
    page) run in the SQLite run only; the PostgreSQL run walks the same flows and checks the
    width at 390 px."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.full = kind == "sqlite"
        self.seen: list[str] = []
        self.paths: list[str] = []
        self.lesser: dict[str, list[dict]] = {}

    def write_report(self) -> None:
        if self.full:
            (PAGES / "axe-lesser-findings.json").write_text(
                json.dumps(self.lesser, indent=1, sort_keys=True))

    async def check(self, page: Any, name: str) -> None:
        """axe (no serious or critical violation; the lesser ones are kept in `lesser`),
        both screenshots, and nothing wider than a 390 px screen."""
        self.seen.append(name)
        self.paths.append(urlparse(page.url).path)
        await page.wait_for_load_state("load")
        if self.full:
            await page.add_script_tag(path=str(AXE))
            violations = await page.evaluate(_RUN_AXE)
            blocking = [v for v in violations if v["impact"] in BLOCKING]
            assert not blocking, f"{name} ({page.url}): {blocking}"
            self.lesser[name] = violations
            await page.screenshot(path=str(PAGES / f"{name}-desktop.png"), full_page=True)
        await page.set_viewport_size(PHONE)
        try:
            widths = await page.evaluate(
                "() => [document.documentElement.scrollWidth, window.innerWidth]")
            if self.full:
                await page.screenshot(path=str(PAGES / f"{name}-390px.png"), full_page=True)
            assert widths[0] <= widths[1], (
                f"{name} ({page.url}) is {widths[0]} px wide on a {widths[1]} px screen: "
                f"{await widest(page)}")
        finally:
            await page.set_viewport_size(DESKTOP)


async def widest(page: Any) -> list[str]:
    """What sticks out on the right, or holds text wider than itself (for the message)."""
    return await page.evaluate("""() => [...document.querySelectorAll("body *")]
      .filter(el => el.getBoundingClientRect().right > window.innerWidth + 1
                    || el.scrollWidth > el.clientWidth + 1 && el.clientWidth > 0)
      .slice(-5).map(el => el.tagName.toLowerCase() + (el.id ? "#" + el.id : "")
        + (el.className ? "." + el.className : "") + " "
        + Math.round(el.getBoundingClientRect().right) + "px, text "
        + el.scrollWidth + "px")""")


async def tab_to(page: Any, selector: str, *, ours: bool = True, limit: int = 40) -> None:
    """Move the focus with Tab only until it is on `selector`; on the bridge's own pages
    (`ours`) the focused element must be visibly marked."""
    for _ in range(limit):
        if await page.evaluate("s => !!document.activeElement?.matches(s)", selector):
            if ours:
                assert await page.evaluate(_FOCUS_SHOWN), (
                    f"{selector} has the focus on {page.url} but shows no focus ring")
            return
        await page.keyboard.press("Tab")
    raise AssertionError(f"{limit} presses of Tab never reached {selector} on {page.url}")


async def press_enter_on(page: Any, selector: str, *, ours: bool = True) -> None:
    await tab_to(page, selector, ours=ours)
    await page.keyboard.press("Enter")
