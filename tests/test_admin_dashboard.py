"""The support dashboard: admins only; find, view relationships, merge and reverse; audited."""

from __future__ import annotations

import re

from .support.web import Browser


async def web_session_for(user, homeserver, web: Browser) -> None:
    """Sign the browser in as a Matrix user with the bot's login link."""
    room = await user.open_management_room(homeserver.bot_mxid)
    await user.send_text(room, "login-link")
    text = await user.wait_for_notice(room, homeserver.bot_mxid, "/auth/matrix?token=")
    token = text.rsplit("token=", 1)[1].strip()
    status, page = await web.matrix_sign_in(token)
    assert status == 200 and "Account Management" in page
    # The link works once.
    status, page = await Browser(homeserver.appservice_url).get(f"/auth/matrix?token={token}")
    assert status == 400 and "already used" in page


async def test_dashboard_for_admins_only_and_audited(start_bridge, new_user, homeserver):
    admin, alice, alice2 = await new_user("admin"), await new_user("alice"), await new_user("al")
    bridge = await start_bridge(permissions={"*": "relay", "localhost": "user",
                                             admin.mxid: "admin"})
    a = await bridge.accounts.for_matrix_user(alice.mxid)
    b = await bridge.accounts.for_matrix_user(alice2.mxid)
    await bridge.storage.accounts.set_credits(b.id, 30)

    outsider = Browser(homeserver.appservice_url)
    staff = Browser(homeserver.appservice_url)
    try:
        await web_session_for(alice, homeserver, outsider)
        status, _ = await outsider.get("/admin/dashboard")
        assert status == 403

        await web_session_for(admin, homeserver, staff)
        status, page = await staff.get(f"/admin/dashboard?q={alice.mxid}")
        assert status == 200 and f"Account {a.id}" in page
        csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
        status, page = await staff.post_form("/admin/merge",
                                             {"into": a.id, "from": b.id, "csrf": csrf})
        assert status == 200 and "Merged (merge_" in page
        assert (await bridge.accounts.view(a.id)).account.credits == 30
        merge_id = re.search(r'id="unmerge-(merge_[^"]+)"', page).group(1)
        status, page = await staff.post_form("/admin/unmerge",
                                             {"merge_id": merge_id, "csrf": csrf})
        assert status == 200 and f"Reversed {merge_id}" in page
        assert (await bridge.accounts.view(b.id)).account.credits == 30
        status, _ = await staff.post_form("/admin/merge", {"into": a.id, "from": b.id,
                                                           "csrf": "forged"})
        assert status == 403
    finally:
        await outsider.close()
        await staff.close()
    records = await bridge.security.audit.latest(100, who=admin.mxid)
    details = " ".join(r.details for r in records)
    assert "viewed_account" in details and "merge_reversed" in details
    assert any(r.event_type == "merge" for r in records)
