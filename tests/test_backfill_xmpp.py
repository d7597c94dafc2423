"""XMPP history in Matrix, end to end on real Prosody (its MUC archive, XEP-0313 MAM) and
real Synapse: a mapped room's portal starts with its newest messages, in order, with their
original times, senders and latest corrections; what the room said while the bridge was
stopped arrives after a restart, once and in order."""

from __future__ import annotations

import asyncio
import time

from mautrix.types import EventType

from .support.matrix import DEADLINE
from .support.prosody import MUC
from .support.slack_history import bodies, timeline, until_bodies
from .test_xmpp import correction, link_xmpp


async def say(peer, muc: str, text: str, **extra) -> str:
    """Send into the room and wait for its reflection, so the archive keeps this order."""
    sent = peer.send(muc, text, **extra)
    await peer.wait_for(lambda m: m["body"] == text, f"the reflection of {text!r}")
    return sent


def _settings(prosody) -> dict:
    return {"networks": {"xmpp": {"enabled": True, "ca_file": str(prosody.ca),
                                  "nameserver": prosody.nameserver,
                                  "backfill": {"initial_messages": 3}}}}


async def test_archive_then_catch_up_after_a_restart(start_bridge, prosody, new_user,
                                                     xmpp_peer, homeserver):
    bridge = await start_bridge(extra=_settings(prosody))
    alice = await new_user("alice")
    alice_xmpp, bob, dave = (await xmpp_peer("alice"), await xmpp_peer("bob"),
                             await xmpp_peer("dave"))
    await alice_xmpp.stop()  # only its credentials are needed
    muc = f"history{bob.nick}@{MUC}"
    await bob.join(muc)
    await dave.join(muc)
    await say(bob, muc, "too old for three")
    await say(bob, muc, "x1")
    second = await say(bob, muc, "x2")
    await say(dave, muc, "x3")
    await say(bob, muc, "x2 fixed", edit=correction(second))
    said_by = int(time.time() * 1000)

    room = await link_xmpp(alice, alice_xmpp, homeserver)
    await alice.send_text(room, f"map xmpp {muc} --profile Jobb")
    portal = await alice.wait_for_invite()
    events = await until_bodies(alice, portal, "x3")
    assert bodies(events) == ["x1", "x2 fixed", "x3"]
    messages = [e for e in events if e.type == EventType.ROOM_MESSAGE]
    # Their time in the archive, not the time the bridge brought them in.
    stamps = [e.timestamp for e in messages]
    assert stamps == sorted(stamps) and stamps[-1] <= said_by
    ghost = bridge.router.ghosts.ghost_mxid
    assert [e.sender for e in messages] == [ghost("xmpp", f"{muc}/{bob.nick}")] * 2 + [
        ghost("xmpp", f"{muc}/{dave.nick}")]

    await bridge.stop()
    await say(bob, muc, "away 1")
    await say(dave, muc, "away 2")
    await start_bridge(extra=_settings(prosody))
    await until_bodies(alice, portal, "away 2")
    bob.send(muc, "live again")
    events = await until_bodies(alice, portal, "live again")
    assert bodies(events) == ["x1", "x2 fixed", "x3", "away 1", "away 2", "live again"]
    assert len(await timeline(alice, portal)) == len(events)


async def test_a_pattern_rules_room_catches_up_after_a_dropped_connection(
        start_bridge, prosody, new_user, xmpp_peer, homeserver):
    """A room a pattern rule (every room of a MUC service) brought in is caught up from its
    archive when the bridge's connection drops and comes back, even once the room's own
    rule is gone: the pattern still maps it."""
    from slixmpp import JID

    bridge = await start_bridge(extra=_settings(prosody))
    alice = await new_user("alice")
    alice_xmpp, bob = await xmpp_peer("alice"), await xmpp_peer("bob")
    await alice_xmpp.stop()  # only its credentials are needed
    room = await link_xmpp(alice, alice_xmpp, homeserver)
    await alice.send_text(room, f"map xmpp *@{MUC} --profile Jobb")
    await alice.wait_for_notice(room, homeserver.bot_mxid, "when you are invited to them")
    muc = f"pattern{bob.nick}@{MUC}"
    await bob.join(muc)
    await say(bob, muc, "before the invite")
    bob.client.plugin["xep_0249"].send_invitation(JID(alice_xmpp.jid), JID(muc))
    portal = await alice.wait_for_invite()
    await until_bodies(alice, portal, "before the invite")
    own = next(r for r in await bridge.storage.rules.for_remote("xmpp", muc))
    await alice.send_text(room, f"unmap {own.id}")
    await alice.wait_for_notice(room, homeserver.bot_mxid, f"Removed the rule for xmpp {muc}")

    # The bridge's connection drops; the room goes on meanwhile.
    session = next(s for s in bridge.connectors["xmpp"].sessions.values()
                   if JID(s.jid).bare == JID(alice_xmpp.jid).bare)
    muc_plugin = bob.client.plugin["xep_0045"]
    occupants = len(muc_plugin.get_roster(muc))
    session.client.disconnect()
    async with asyncio.timeout(DEADLINE):
        while True:  # until Bob sees the bridge's occupant leave
            if len(muc_plugin.get_roster(muc)) < occupants:
                break
            await asyncio.sleep(0.05)
    await say(bob, muc, "while the bridge was away")
    events = await until_bodies(alice, portal, "while the bridge was away")
    bob.send(muc, "live again")
    events = await until_bodies(alice, portal, "live again")
    assert bodies(events) == ["before the invite", "while the bridge was away", "live again"]
