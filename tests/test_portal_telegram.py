"""Linking Telegram from the portal (an aiohttp browser; Telethon in the bridge talks MTProto
to the wire-level fake): the QR code is shown in the page, the phone's login code and the
cloud password are asked in password fields and never shown again, and the bridge's consent
comes before anything is linked."""

from __future__ import annotations

import re
from html import unescape

import pytest
from telethon import TelegramClient

from tests.fakes.telegram import TelegramThread

from .support.telegram import telegram_settings
from .support.web import Browser
from .test_portal_pages import matrix_session


@pytest.fixture(scope="module")
def server():
    thread = TelegramThread()
    thread.start()
    TelegramClient._config = None  # this module's fake has data centres of its own
    yield thread
    thread.stop()


def step_fields(page: str) -> dict[str, str]:
    """The hidden fields of the page's step form, and the kind of its answer field."""
    fields = {name: unescape(value) for name, value in re.findall(
        r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page)}
    answer = re.search(r'<input type="([a-z]+)" id="answer"', page)
    fields["kind"] = answer.group(1) if answer else ""
    return fields


async def answer(web: Browser, page: str, value: str) -> str:
    fields = step_fields(page)
    fields.pop("kind")
    status, page = await web.post_form("/account/link/step", {**fields, "answer": value})
    assert status == 200, page
    return page


async def test_telegram_qr_and_phone_code_in_the_page(start_bridge, server, new_user,
                                                     homeserver, browser, tmp_path):
    fake = server.fake
    bridge = await start_bridge(extra={"networks": {"telegram": telegram_settings(
        server, tmp_path / "telegram.pub")}})
    person = fake.add_person("Alice", password="tr0ub4dor")
    alice, web = await new_user("alice"), browser()
    await matrix_session(alice, homeserver, web)
    account = await bridge.storage.accounts.by_mxid(alice.mxid)
    jobb = await bridge.storage.profiles.by_name(account.id, "Jobb")
    token = await web.csrf("/account/link")
    start = {"csrf": token, "network": "telegram", "profile": jobb.id}

    # Without a number: the QR code, as an image in the page.
    status, page = await web.post_form("/account/link", {**start, "address": ""})
    assert status == 200 and 'id="login-qr" src="data:image/png;base64,' in page
    assert "Scan this QR code" in unescape(page)

    # With the number: the code Telegram sent, then the cloud password, each in a password
    # field; neither is ever in a page again.
    status, page = await web.post_form("/account/link",
                                       {**start, "address": f"+{person.phone}"})
    assert status == 200 and step_fields(page)["kind"] == "password"
    code = fake.code_for(person)
    page = await answer(web, page, code)
    assert "cloud password" in unescape(page) and step_fields(page)["kind"] == "password"
    page = await answer(web, page, "not-the-password")
    assert "refused that cloud password" in unescape(page)
    page = await answer(web, page, "tr0ub4dor")
    assert 'id="consent-yes"' in page and f"Telegram user {person.id}" in unescape(page)
    assert (await bridge.accounts.view(account.id)).profiles[0].personas == []
    page = await answer(web, page, "yes")
    assert f"Linked telegram:{person.id}." in unescape(page)
    for secret in (code, "tr0ub4dor", "not-the-password"):
        assert secret not in page
    [persona] = await bridge.storage.personas.for_profile(jobb.id)
    assert persona.platform == "telegram" and persona.status.value == "active"
