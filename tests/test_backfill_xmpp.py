"""XMPP history in Matrix, end to end on real Prosody (its MUC archive, XEP-0313 MAM) and
real Synapse: a mapped room's portal starts with its newest messages, in order, with their
original times, senders and latest corrections; what the room said while the bridge was
stopped arrives after a restart, once and in order."""

from __future__ import annotations

import time

from mautrix.types import EventType

from .support.prosody import MUC
from .test_backfill_slack import bodies, timeline, until_bodies
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
