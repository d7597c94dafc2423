"""In a MUC, replies, reactions and retractions name the room's stanza-id (XEP-0359 by the
room; XEP-0461, XEP-0444, XEP-0424), not the sender's message id; direct chats keep the
message id. Observed at a second real XMPP client on the test Prosody (its MUC archives, so
it stamps each groupchat message with a stanza-id)."""

from __future__ import annotations

from mautrix.types import EventType

from bridge.db import MessageKind, MessageRow, open_database

from .test_xmpp import body_is, link_xmpp, mapped_muc, reaction, reply_to


def stanza_id_by(msg, room: str) -> str:
    ids = [e.get("id") for e in msg.xml.findall("{urn:xmpp:sid:0}stanza-id")
           if e.get("by") == room]
    assert ids, f"the room {room} gave no stanza-id to {msg}"
    return ids[0]


async def test_a_message_is_found_by_the_id_its_room_gave_it_first(db_uri):
    """A sender picks their own message ids, so one may reuse a stanza-id the room gave
    someone else's message: a reference by that id still means the room's message."""
    storage = await open_database(db_uri)
    try:
        await storage.portals.insert("xmpp", "room@muc", "!room:x", "room")
        for remote_id, room_ref, mxid in (("alice-id", "sid-1", "$alice"),
                                          ("sid-1", "sid-2", "$mallory")):
            assert await storage.messages.insert(MessageRow(
                network="xmpp", remote_room="room@muc", remote_id=remote_id,
                kind=MessageKind.MESSAGE, mxid=mxid, room_mxid="!room:x",
                sender_mxid="@x:x", room_ref=room_ref))
        assert (await storage.messages.get_by_remote("xmpp", "room@muc", "sid-1")).mxid == (
            "$alice")
        assert (await storage.messages.get_by_remote("xmpp", "room@muc", "alice-id")).mxid == (
            "$alice")  # corrections name the sender's id
        assert (await storage.messages.get_by_mxid("$mallory")).room_ref == "sid-2"
    finally:
        await storage.close()


async def test_muc_replies_reactions_and_retractions_name_the_room_stanza_id(
        xmpp_bridge, new_user, xmpp_peer, homeserver):
    alice = await new_user("alice")
    alice_xmpp, bob = await xmpp_peer("alice"), await xmpp_peer("bob")
    await alice_xmpp.stop()
    muc, portal = await mapped_muc(alice, alice_xmpp, bob, homeserver)

    # Bob's message, as the room gave it to him (his own reflection).
    bobs_id = bob.send(muc, "from bob")
    bobs = await bob.wait_for(lambda m: m["body"] == "from bob", "bob's reflection")
    bobs_ref = stanza_id_by(bobs, muc)
    assert bobs_ref != bobs_id
    from_bob = await alice.wait_for_event(portal, body_is("from bob"), "bob's message")

    # Matrix -> XMPP, about bob's message.
    await alice.send_text(portal, "answering bob", reply_to=from_bob.event_id)
    answer = await bob.wait_for(lambda m: m["body"] == "answering bob", "alice's reply")
    assert answer["reply"]["id"] == bobs_ref
    await alice.client.react(portal, from_bob.event_id, "👀")
    looked = await bob.wait_for(lambda m: m.get_plugin("reactions", check=True)
                                and "👀" in m["reactions"]["values"], "alice's reaction")
    assert looked["reactions"]["id"] == bobs_ref

    # Matrix -> XMPP, about alice's own message: the stanza-id the room gave it when the
    # bridge sent it, as every occupant saw it.
    mine = await alice.send_text(portal, "from alice")
    hers = await bob.wait_for(lambda m: m["body"] == "from alice", "alice's message")
    hers_ref = stanza_id_by(hers, muc)
    assert hers_ref != hers["id"]
    await alice.client.react(portal, mine, "🎉")
    party = await bob.wait_for(lambda m: m.get_plugin("reactions", check=True)
                               and "🎉" in m["reactions"]["values"], "the reaction")
    assert party["reactions"]["id"] == hers_ref
    # A correction still names the message id (XEP-0308).
    await alice.send_text(portal, "from alice, corrected", edit_of=mine)
    fixed = await bob.wait_for(lambda m: m["body"] == "from alice, corrected", "the edit")
    assert fixed["replace"]["id"] == hers["id"]

    # XMPP -> Matrix: bob names alice's message by the room's stanza-id, as his client must.
    bob.send(muc, "> from alice\nnice", reply=reply_to(hers_ref, f"{muc}/{alice_xmpp.nick}"))
    nice = await alice.wait_for_event(
        portal, lambda e: e.type == EventType.ROOM_MESSAGE and "nice" in e.content.body,
        "bob's reply")
    assert nice.content.get_reply_to() == mine
    bob.send(muc, "", react=reaction(hers_ref, "👍"))
    await alice.wait_for_event(
        portal, lambda e: e.type == EventType.REACTION and e.content.relates_to.event_id == mine
        and e.content.relates_to.key == "👍", "bob's reaction by stanza-id")

    await alice.client.redact(portal, mine)
    gone = await bob.wait_for(lambda m: m.get_plugin("retract", check=True), "the retraction")
    assert gone["retract"]["id"] == hers_ref


async def test_direct_chats_keep_the_message_id(xmpp_bridge, new_user, xmpp_peer, homeserver):
    alice = await new_user("alice")
    alice_xmpp, bob = await xmpp_peer("alice"), await xmpp_peer("bob")
    await alice_xmpp.stop()
    await link_xmpp(alice, alice_xmpp, homeserver)
    bobs_id = bob.send(alice_xmpp.jid, "hi alice", kind="chat")
    portal = await alice.wait_for_invite()
    hello = await alice.wait_for_event(portal, body_is("hi alice"), "bob's chat")
    await alice.send_text(portal, "hi bob", reply_to=hello.event_id)
    answer = await bob.wait_for(lambda m: m["body"] == "hi bob", "alice's reply")
    assert answer["reply"]["id"] == bobs_id
    await alice.client.react(portal, hello.event_id, "👋")
    wave = await bob.wait_for(lambda m: m.get_plugin("reactions", check=True)
                              and "👋" in m["reactions"]["values"], "alice's reaction")
    assert wave["reactions"]["id"] == bobs_id
    mine = await alice.send_text(portal, "oops")
    oops = await bob.wait_for(lambda m: m["body"] == "oops", "alice's message")
    await alice.client.redact(portal, mine)
    gone = await bob.wait_for(lambda m: m.get_plugin("retract", check=True), "the retraction")
    assert gone["retract"]["id"] == oops["id"]
