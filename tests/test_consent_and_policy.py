"""Consent and control over what the bridge does as a person, on the XMPP network: pause,
resume and revoke; the admin's policy; first-send confirmation."""

from __future__ import annotations

from .test_xmpp import MUC, mapped_muc


async def test_pause_resume_and_revoke(xmpp_bridge, new_user, xmpp_peer, homeserver):
    alice = await new_user("alice")
    alice_xmpp, bob = await xmpp_peer("alice"), await xmpp_peer("bob")
    await alice_xmpp.stop()
    _, portal = await mapped_muc(alice, alice_xmpp, bob, homeserver)
    room = await alice.open_management_room(homeserver.bot_mxid)
    bot = homeserver.bot_mxid
    ref = f"xmpp:{alice_xmpp.jid}"

    await alice.send_text(room, f"pause {ref}")
    await alice.wait_for_notice(room, bot, f"{ref} is now paused.")
    await alice.send_text(portal, "sent while paused")
    notice = await alice.wait_for_notice(portal, bot, "paused or needs attention")
    assert '"resume"' in notice

    await alice.send_text(room, f"resume {ref}")
    await alice.wait_for_notice(room, bot, f"{ref} is now active.")
    await alice.send_text(portal, "sent after resuming")
    await bob.wait_for(lambda m: m["body"] == "sent after resuming", "the message after resume")
    assert not [m for m in bob.messages if m["body"] == "sent while paused"]

    await alice.send_text(room, f"revoke {ref}")
    await alice.wait_for_notice(room, bot, f"{ref} is now revoked.")
    account = await xmpp_bridge.accounts.for_matrix_user(alice.mxid)
    persona = await xmpp_bridge.accounts.find_persona(account.id, ref)
    assert await xmpp_bridge.storage.vault_secrets.get(*persona.vault_ref, "password") is None
    await alice.send_text(room, f"resume {ref}")
    await alice.wait_for_notice(room, bot, "was revoked; link it again")
    kinds = [r.event_type for r in await xmpp_bridge.security.audit.latest(20, who=account.id)]
    assert {"pause", "resume", "revoke"} <= set(kinds)


async def test_admin_policy_refuses_before_anything_is_sent(start_bridge, prosody, new_user,
                                                            xmpp_peer, homeserver):
    await start_bridge(extra={
        "networks": {"xmpp": {"enabled": True, "ca_file": str(prosody.ca),
                              "nameserver": prosody.nameserver}},
        "policy": {"allowed_actions": {"xmpp": ["send", "edit", "react", "typing", "read"]},
                   "denied_channels": {"xmpp": [f"secret*@{MUC}"]}}})
    alice = await new_user("alice")
    alice_xmpp, bob = await xmpp_peer("alice"), await xmpp_peer("bob")
    await alice_xmpp.stop()
    muc, portal = await mapped_muc(alice, alice_xmpp, bob, homeserver)
    mine = await alice.send_text(portal, "keep this")
    await bob.wait_for(lambda m: m["body"] == "keep this", "alice's message")
    await alice.client.redact(portal, mine)
    notice = await alice.wait_for_notice(portal, homeserver.bot_mxid, "policy")
    assert notice == "The bridge's policy does not allow delete on xmpp, so this was not sent."

    room = await alice.open_management_room(homeserver.bot_mxid)
    secret_muc = f"secret{bob.nick}@{MUC}"
    await bob.join(secret_muc)
    await alice.send_text(room, f"map xmpp {secret_muc}")
    await alice.wait_for_notice(room, homeserver.bot_mxid, f"Mapped xmpp {secret_muc}")
    secret_portal = await alice.wait_for_invite()
    await alice.send_text(secret_portal, "psst")
    await alice.wait_for_notice(secret_portal, homeserver.bot_mxid,
                                f"does not allow acting in {secret_muc}")
    bob.send(muc, "marker")
    await bob.wait_for(lambda m: m["body"] == "marker", "the marker")
    assert not [m for m in bob.messages if m["body"] == "psst"
                or m.get_plugin("retract", check=True)]


async def test_first_send_into_a_room_waits_for_confirmation(xmpp_bridge, new_user,
                                                             xmpp_peer, homeserver):
    alice = await new_user("alice")
    alice_xmpp, bob = await xmpp_peer("alice"), await xmpp_peer("bob")
    await alice_xmpp.stop()
    muc, portal = await mapped_muc(alice, alice_xmpp, bob, homeserver)
    room = await alice.open_management_room(homeserver.bot_mxid)
    bot = homeserver.bot_mxid
    await alice.send_text(room, "confirm-first on --profile Jobb")
    await alice.wait_for_notice(room, bot, "wait for your confirmation")

    await alice.send_text(portal, "first words")
    await alice.wait_for_notice(portal, bot, "Held: this is your first message")
    await alice.send_text(room, "confirm")
    await alice.wait_for_notice(room, bot, f"Sending your first message into {muc}")
    await bob.wait_for(lambda m: m["body"] == "first words", "the confirmed message")
    await alice.send_text(portal, "second words")
    await bob.wait_for(lambda m: m["body"] == "second words", "the next message, unheld")

    other = f"other{bob.nick}@{MUC}"
    await bob.join(other)
    await alice.send_text(room, f"map xmpp {other} --profile Jobb")
    await alice.wait_for_notice(room, bot, f"Mapped xmpp {other}")
    other_portal = await alice.wait_for_invite()
    await alice.send_text(other_portal, "never mind")
    await alice.wait_for_notice(other_portal, bot, "Held: this is your first message")
    await alice.send_text(room, "cancel")
    await alice.wait_for_notice(room, bot, f"Dropped the held message for {other}")
    bob.send(other, "marker")
    await bob.wait_for(lambda m: m["body"] == "marker", "the marker")
    assert not [m for m in bob.messages if m["body"] == "never mind"]
    decisions = [r.details for r in await xmpp_bridge.security.audit.latest(50)
                 if r.event_type == "first_send_confirmation"]
    assert len(decisions) == 2

