"""Per-person capabilities on the XMPP network: what a person allows the bridge to do as them,
within the admin's policy, checked before anything is sent."""

from __future__ import annotations

from .support.security import wait_for_notices
from .test_xmpp import MUC, mapped_muc


async def test_capabilities_narrow_what_is_sent_within_the_policy(start_bridge, prosody,
                                                                  new_user, xmpp_peer,
                                                                  homeserver):
    bridge = await start_bridge(extra={
        "networks": {"xmpp": {"enabled": True, "ca_file": str(prosody.ca),
                              "nameserver": prosody.nameserver}},
        "policy": {"allowed_actions": {"xmpp": ["send", "edit", "react", "typing", "read"]},
                   "denied_channels": {"xmpp": [f"secret*@{MUC}"]}}})
    alice = await new_user("alice")
    alice_xmpp, bob = await xmpp_peer("alice"), await xmpp_peer("bob")
    await alice_xmpp.stop()
    muc, portal = await mapped_muc(alice, alice_xmpp, bob, homeserver)
    room = await alice.open_management_room(homeserver.bot_mxid)
    bot = homeserver.bot_mxid

    # Nothing granted yet: everything the policy allows goes through, as before.
    await alice.send_text(room, "capabilities")
    listing = await alice.wait_for_notice(room, bot, "What RelayForge may do as you")
    assert "Jobb: everything the bridge's policy allows" in listing
    assert f"The bridge's policy on xmpp: send, edit, react, typing, read; never in secret*@{MUC}" \
        in listing
    await alice.send_text(portal, "before any grant")
    await bob.wait_for(lambda m: m["body"] == "before any grant", "the first message")

    # Nobody can allow what the admin's policy forbids.
    await alice.send_text(room, "allow Jobb delete on xmpp")
    refused = await alice.wait_for_notice(room, bot, "cannot allow it")
    assert refused == ("The bridge's policy does not allow delete on xmpp, so you cannot allow "
                       "it.")
    await alice.send_text(room, f"allow Jobb send on xmpp/*/secret*@{MUC}")
    refused = await alice.wait_for_notice(room, bot, f"acting in secret*@{MUC}")
    assert "so you cannot allow it" in refused

    # Allowing only other rooms makes this one off limits.
    await alice.send_text(room, f"allow Jobb send,react on xmpp/{MUC}/other*")
    await alice.wait_for_notice(room, bot, "may now send, react as you (Jobb)")
    await alice.send_text(portal, "outside my grants")
    notice = await alice.wait_for_notice(portal, bot, "capabilities")
    assert notice == (f"Your capabilities for Jobb do not allow send in {muc} on xmpp, so this "
                      'was not sent. See "capabilities" in your management room.')

    await alice.send_text(room, f"allow Jobb send on xmpp/{MUC}/team*")
    await alice.wait_for_notice(room, bot, f"may now send as you (Jobb) on xmpp/{MUC}/team*")
    await alice.send_text(portal, "inside my grants")
    await bob.wait_for(lambda m: m["body"] == "inside my grants", "the granted message")

    # A deny for this one account wins over the allow.
    await alice.send_text(room, f"deny Jobb send on xmpp/*/{muc} --persona xmpp:{alice_xmpp.jid}")
    denied = await alice.wait_for_notice(room, bot, "may no longer send")
    rule = denied.split("Rule ", 1)[1].split(";")[0]
    await alice.send_text(portal, "denied again")
    await wait_for_notices(alice, portal, bot, f"do not allow send in {muc}", 2)
    await alice.send_text(room, "capabilities")
    listing = await alice.wait_for_notice(room, bot, f"{rule}: deny send")
    assert f"(only xmpp:{alice_xmpp.jid})" in listing
    assert "on xmpp: only what is allowed above" in listing

    await alice.send_text(room, f"capabilities remove {rule}")
    await alice.wait_for_notice(room, bot, f"Removed {rule}.")
    await alice.send_text(portal, "allowed once more")
    await bob.wait_for(lambda m: m["body"] == "allowed once more", "the message after removal")
    assert not [m for m in bob.messages if m["body"] in ("outside my grants", "denied again")]

    account = await bridge.accounts.for_matrix_user(alice.mxid)
    changes = [r.details for r in await bridge.security.audit.latest(50, who=account.id)
               if r.event_type == "capability"]
    assert len(changes) == 4  # allow, allow, deny, remove; the refused ones changed nothing
    assert all('"actions":"' in c for c in changes)
