"""The management bot, end to end on a real Synapse (SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest

from bridge import __version__


async def test_dm_becomes_management_room_and_answers_help(bridge, new_user, homeserver):
    alice = await new_user("alice")
    room = await alice.open_management_room(homeserver.bot_mxid)

    await alice.send_text(room, "help")
    text = await alice.wait_for_notice(room, homeserver.bot_mxid, "General:")
    lines = text.splitlines()
    assert lines[0] == "General:"
    # One line per command, no prefix needed in the management room.
    for name in ("help", "ping", "version", "whoami"):
        assert sum(line.strip().startswith(f"{name} - ") for line in lines) == 1, text


async def test_ping_and_version(bridge, new_user, homeserver):
    alice = await new_user("alice")
    room = await alice.open_management_room(homeserver.bot_mxid)
    await alice.send_text(room, "ping")
    pong = await alice.wait_for_notice(room, homeserver.bot_mxid, "Pong")
    assert "loopback: connected" in pong
    await alice.send_text(room, "version")
    await alice.wait_for_notice(room, homeserver.bot_mxid, f"RelayForge {__version__}")


async def test_unknown_command(bridge, new_user, homeserver):
    alice = await new_user("alice")
    room = await alice.open_management_room(homeserver.bot_mxid)
    await alice.send_text(room, "frobnicate now")
    reply = await alice.wait_for_notice(room, homeserver.bot_mxid, "Unknown command")
    assert reply == 'Unknown command "frobnicate". Try "help".'


async def test_whoami_reports_level(bridge, new_user, homeserver):
    alice = await new_user("alice")
    room = await alice.open_management_room(homeserver.bot_mxid)
    await alice.send_text(room, "whoami")
    reply = await alice.wait_for_notice(room, homeserver.bot_mxid, "You are")
    assert alice.mxid in reply
    assert "permission level is user" in reply
    assert "This room is your management room" in reply


async def test_other_rooms_need_the_prefix(bridge, new_user, homeserver):
    alice = await new_user("alice")
    bob = await new_user("bob")
    room = await alice.client.create_room(invitees=[homeserver.bot_mxid, bob.mxid],
                                          name="team room")
    await bob.client.join_room_by_id(room)
    # Three members: a group room, not a management room. Plain "help" is ordinary chat.
    await alice.wait_for_event(
        room, lambda e: e.sender == homeserver.bot_mxid and str(e.type) == "m.room.member",
        "the bot joining",
    )
    await alice.send_text(room, "help")
    await alice.send_text(room, "!rf ping")
    await alice.wait_for_notice(room, homeserver.bot_mxid, "Pong")
    notices = await alice.notices_from(room, homeserver.bot_mxid)
    assert not any("General:" in n for n in notices), notices
    await alice.send_text(room, "!rf nope")
    reply = await alice.wait_for_notice(room, homeserver.bot_mxid, "Unknown command")
    assert reply == 'Unknown command "nope". Try "!rf help".'


@pytest.mark.parametrize("how", ["dm", "prefixed"])
async def test_person_without_permission_is_refused(start_bridge, new_user, homeserver, how):
    alice = await new_user("alice")
    stranger = await new_user("stranger")
    await start_bridge(permissions={"*": "relay", alice.mxid: "user"})
    if how == "dm":
        room = await stranger.open_dm(homeserver.bot_mxid)
        reply = await stranger.wait_for_notice(room, homeserver.bot_mxid, "not allowed")
    else:
        room = await alice.client.create_room(invitees=[homeserver.bot_mxid, stranger.mxid])
        await stranger.client.join_room_by_id(room)
        await alice.wait_for_event(
            room, lambda e: e.sender == homeserver.bot_mxid and str(e.type) == "m.room.member",
            "the bot joining",
        )
        await stranger.send_text(room, "!rf help")
        reply = await stranger.wait_for_notice(room, homeserver.bot_mxid, "not allowed")
    assert "bridge.permissions" in reply


async def test_audit_command_shows_own_records_and_admins_see_all(start_bridge, new_user,
                                                                   homeserver):
    alice = await new_user("alice")
    admin = await new_user("admin")
    bridge = await start_bridge(permissions={"*": "relay", "localhost": "user",
                                             admin.mxid: "admin"})
    room = await alice.open_management_room(homeserver.bot_mxid)
    await alice.send_text(room, "audit")
    # Her first contact made her account: that is her first record.
    text = await alice.wait_for_notice(room, homeserver.bot_mxid, "Last 1 audit records")
    assert f"account_created by {alice.mxid}" in text

    audit = bridge.security.audit
    await audit.append("link", actor=alice.mxid, account=alice.mxid, profile="Jobb",
                       persona="slack:U1", details={"network": "slack"})
    await audit.append("link", actor=admin.mxid, account=admin.mxid, details={"network": "x"})
    await alice.send_text(room, "audit 5")
    text = await alice.wait_for_notice(room, homeserver.bot_mxid, "Last 2 audit records")
    assert "link by " + alice.mxid in text and "(Jobb/slack:U1)" in text
    assert admin.mxid not in text

    await alice.send_text(room, "audit all")
    await alice.wait_for_notice(room, homeserver.bot_mxid,
                                "Only bridge admins can read other people's audit records.")
    admin_room = await admin.open_management_room(homeserver.bot_mxid)
    await admin.send_text(admin_room, "audit all")
    text = await admin.wait_for_notice(admin_room, homeserver.bot_mxid, "Last 4 audit records")
    assert alice.mxid in text and admin.mxid in text


async def test_audit_head_is_posted_to_the_admin_room(start_bridge, new_user, homeserver):
    admin = await new_user("admin")
    colleague = await new_user("colleague")
    first = await start_bridge()
    room = await admin.client.create_room(invitees=[homeserver.bot_mxid, colleague.mxid],
                                          name="bridge admins")
    await admin.wait_for_event(
        room, lambda e: e.sender == homeserver.bot_mxid and str(e.type) == "m.room.member",
        "the bot joining")
    head = await first.security.audit.append("admin_action", actor=admin.mxid,
                                             details={"what": "test"})
    await first.stop()

    await start_bridge(audit={"notice_room": room})
    text = await admin.wait_for_notice(room, homeserver.bot_mxid, "Audit log head")
    assert text == f"Audit log head: record {head.seq} at {head.ts}, MAC {head.mac}"
