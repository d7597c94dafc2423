"""Linking a high-risk account from the portal (the bridge's policy calls every XMPP account
high-risk; the real Prosody): refused before any password without MFA, and asked for a fresh
MFA code in the page before the consent."""

from __future__ import annotations

import asyncio
from html import unescape

from .test_mfa import enrol, xmpp_settings
from .test_portal_pages import matrix_session
from .test_portal_telegram import answer, step_fields


async def test_high_risk_link_asks_for_mfa_in_the_page(start_bridge, prosody, new_user,
                                                      xmpp_peer, homeserver, browser):
    bridge = await start_bridge(extra=xmpp_settings(prosody, fresh_seconds=1))
    alice, web = await new_user("alice"), browser()
    alice_xmpp = await xmpp_peer("alice")
    await alice_xmpp.stop()
    await matrix_session(alice, homeserver, web)
    account = await bridge.storage.accounts.by_mxid(alice.mxid)
    jobb = await bridge.storage.profiles.by_name(account.id, "Jobb")
    start = {"csrf": await web.csrf("/account/link"), "network": "xmpp",
             "profile": jobb.id, "address": alice_xmpp.jid}

    # Without MFA: said before any password is asked, in the bot's words.
    status, page = await web.post_form("/account/link", start)
    assert status == 400 and "set up MFA with `mfa setup`" in unescape(page)
    assert 'id="answer"' not in page

    room = await alice.open_management_room(homeserver.bot_mxid)
    app = await enrol(alice, room, homeserver)
    await asyncio.sleep(1.5)  # the enrolment's check is no longer fresh
    status, page = await web.post_form("/account/link", start)
    assert status == 200 and step_fields(page)["kind"] == "password"
    page = await answer(web, page, alice_xmpp.password)
    assert "needs a fresh MFA check" in unescape(page) and step_fields(page)["field"] == (
        "mfa_code")
    page = await answer(web, page, app.wrong_code())
    assert "That code is wrong." in unescape(page)
    assert (await bridge.accounts.view(account.id)).profiles[0].personas == []
    page = await answer(web, page, app.code())
    assert 'id="consent-yes"' in page
    page = await answer(web, page, "yes")
    assert f"Linked xmpp:{alice_xmpp.jid}." in unescape(page)
    assert alice_xmpp.password not in page
