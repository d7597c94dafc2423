"""`link` for a network that is not running says who can change that, and how."""

from __future__ import annotations


async def test_link_to_a_network_that_is_off(start_bridge, new_user, homeserver):
    person = await new_user("person")
    admin = await new_user("admin")
    await start_bridge(permissions={"*": "relay", "localhost": "user", admin.mxid: "admin"})
    bot = homeserver.bot_mxid

    room = await person.open_management_room(bot)
    await person.send_text(room, "link xmpp me@example.org")
    answer = await person.wait_for_notice(room, bot, "not enabled")
    assert "Ask the bridge's admin to turn it on" in answer
    assert "networks.xmpp.enabled" not in answer

    admin_room = await admin.open_management_room(bot)
    await admin.send_text(admin_room, "link xmpp me@example.org")
    answer = await admin.wait_for_notice(admin_room, bot, "not enabled")
    assert "networks.xmpp.enabled: true" in answer and "config.example.yaml" in answer

    await person.send_text(room, "link myspace me")
    answer = await person.wait_for_notice(room, bot, "myspace")
    assert "not a network RelayForge knows" in answer and "xmpp" in answer
