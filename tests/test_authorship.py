"""Only a message's author changes it, in both directions (XEP-0308/0424, Matrix's edit rules):
real Prosody and Synapse."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from mautrix.types import EventType

from .support.matrix import DEADLINE
from .test_xmpp import MUC, body_is, correction, link_xmpp
from .test_xmpp_groupchat_ids import stanza_id_by


async def wait_for_log(caplog: pytest.LogCaptureFixture, contains: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not any(contains in r.getMessage() for r in caplog.records):
        if time.monotonic() > deadline:
            raise AssertionError(f"the bridge never logged {contains!r}")
        await asyncio.sleep(0.1)


def retracted_ids(peer) -> list[str]:
    return [m["retract"]["id"] for m in peer.messages if m.get_plugin("retract", check=True)]


async def test_only_the_author_edits_or_deletes_across_the_bridge(
        xmpp_bridge, new_user, xmpp_peer, homeserver, caplog):
    caplog.set_level(logging.INFO, logger="relayforge.router")
    alice, carol = await new_user("alice"), await new_user("carol")
    alice_xmpp, bob, dave = await xmpp_peer("alice"), await xmpp_peer("bob"), await xmpp_peer(
        "dave")
    await alice_xmpp.stop()
    muc = f"authors{bob.nick}@{MUC}"
    await bob.join(muc)
    await dave.join(muc)
    room = await link_xmpp(alice, alice_xmpp, homeserver)
    # Relay mode: what carol (no XMPP account) does would go out through alice's account.
    await alice.send_text(room, f"map xmpp {muc} --relay")
    await alice.wait_for_notice(room, homeserver.bot_mxid, f"Mapped xmpp {muc}")
    portal = await alice.wait_for_invite()
    bot = xmpp_bridge.bot.intent
    await bot.invite_user(portal, carol.mxid)
    await carol.client.join_room_by_id(portal)
    levels = await bot.get_power_levels(portal)
    levels.users[carol.mxid] = 50  # a moderator: may redact anyone's message in Matrix
    await bot.set_power_levels(portal, levels)

    # XMPP -> Matrix: a stranger's correction naming bob's message id changes nothing.
    bobs = bob.send(muc, "bob's words")
    original = await alice.wait_for_event(portal, body_is("bob's words"), "bob's message")
    dave.send(muc, "dave's rewrite", edit=correction(bobs))
    await wait_for_log(caplog, f"correction of {bobs}")
    bob.send(muc, "bob's own fix", edit=correction(bobs))
    await alice.wait_for_event(portal, lambda e: e.type == EventType.ROOM_MESSAGE
                               and e.content.get_edit() == original.event_id, "bob's fix")
    edits = [e.content.body for e in await alice.room_events(portal)
             if e.type == EventType.ROOM_MESSAGE and e.content.get_edit()]
    assert edits == ["bob's own fix"]

    # Matrix -> XMPP: carol edits and the moderator's redactions stay in Matrix.
    alices = await alice.send_text(portal, "alice's words")
    sent = await bob.wait_for(lambda m: m["body"] == "alice's words", "alice's message")
    await carol.send_text(portal, "carol's rewrite", edit_of=alices)
    await carol.client.redact(portal, alices)
    await carol.client.redact(portal, original.event_id)
    for gone in (alices, original.event_id):  # the Matrix copies are gone
        assert not (await alice.client.get_event(portal, gone)).content.serialize().get("body")
    # The author's own edit and retraction still go out, after carol's (one queue per room).
    later = await alice.send_text(portal, "alice again")
    again = await bob.wait_for(lambda m: m["body"] == "alice again", "alice's second message")
    await alice.send_text(portal, "alice again, edited", edit_of=later)
    fixed = await bob.wait_for(lambda m: m["body"] == "alice again, edited", "alice's edit")
    assert fixed["replace"]["id"] == again["id"]
    await alice.client.redact(portal, later)
    # In a group chat a retraction names the id the room gave the message (XEP-0424).
    again_ref = stanza_id_by(again, muc)
    await bob.wait_for(lambda m: again_ref in retracted_ids(bob), "alice's retraction")
    assert retracted_ids(bob) == [again_ref]  # neither alice's first message nor bob's
    assert not [m for m in bob.messages if "carol's rewrite" in m["body"]]
    assert sent["id"] not in [m["replace"]["id"] for m in bob.messages
                              if m.get_plugin("replace", check=True)]
