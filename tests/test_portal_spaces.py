"""Portals land in the space of the profile they belong to, both ways round (`m.space.child`
in the space, `m.space.parent` in the portal): real Prosody and Synapse room state."""

from __future__ import annotations

from mautrix.types import EventType

from .test_xmpp import MUC, body_is, link_xmpp


async def space_links(user, space: str) -> set[str]:
    """The rooms a space lists as children (a removed child has empty content)."""
    state = await user.client.get_state(space)
    return {e.state_key for e in state
            if e.type == EventType.SPACE_CHILD and e.content.serialize().get("via")}


async def parents(user, room: str) -> set[str]:
    state = await user.client.get_state(room)
    return {e.state_key for e in state
            if e.type == EventType.SPACE_PARENT and e.content.serialize().get("via")}


async def test_rule_and_direct_chat_portals_are_in_the_profiles_space(
        xmpp_bridge, new_user, xmpp_peer, homeserver):
    alice = await new_user("alice")
    alice_xmpp, bob = await xmpp_peer("alice"), await xmpp_peer("bob")
    await alice_xmpp.stop()
    muc = f"spaces{bob.nick}@{MUC}"
    await bob.join(muc)
    room = await link_xmpp(alice, alice_xmpp, homeserver, profile="Jobb")
    account = await xmpp_bridge.accounts.for_matrix_user(alice.mxid)
    profiles = {p.name: p.space_mxid
                for p in await xmpp_bridge.storage.profiles.for_account(account.id)}
    jobb, privat = profiles["Jobb"], profiles["Privat"]
    for space in (jobb, privat):  # the person was invited to their spaces
        await alice.client.join_room_by_id(space)

    await alice.send_text(room, f"map xmpp {muc} --profile Jobb")
    await alice.wait_for_notice(room, homeserver.bot_mxid, f"Mapped xmpp {muc} into Jobb")
    mapped = await alice.wait_for_invite()
    bob.send(alice_xmpp.jid, "hi alice, directly", kind="chat")
    direct = await alice.wait_for_invite()
    await alice.wait_for_event(direct, body_is("hi alice, directly"), "bob's chat")

    assert await space_links(alice, jobb) == {mapped, direct}
    assert await space_links(alice, privat) == set()
    for portal in (mapped, direct):
        assert await parents(alice, portal) == {jobb}
        parent = await alice.client.get_state_event(portal, EventType.SPACE_PARENT, jobb)
        assert parent.serialize()["canonical"] is True
