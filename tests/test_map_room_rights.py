"""Mapping into an existing Matrix room (`map ... --room`, the API's `target_room`) needs a
requester who is joined to it and may change it: otherwise anyone could bridge a room they do
not control (and, with --relay, speak there as themselves to the remote side)."""

from __future__ import annotations

from mautrix.types import RoomCreatePreset

from .support.api import PREFIX, Api
from .test_xmpp import MUC, body_is, link_xmpp

SECRET = "r" * 40


async def rooms_for_the_test(alice, mallory) -> tuple[str, str]:
    """Mallory's public room (the bot could join it; alice is not in it), and alice's own."""
    theirs = await mallory.client.create_room(preset=RoomCreatePreset.PUBLIC)
    mine = await alice.client.create_room(preset=RoomCreatePreset.PUBLIC)
    return theirs, mine


async def bot_members(user, room: str, bot: str) -> bool:
    return bot in await user.client.get_joined_members(room)


async def test_map_room_needs_membership_and_power(xmpp_bridge, new_user, xmpp_peer,
                                                   homeserver):
    bot = homeserver.bot_mxid
    alice, mallory = await new_user("alice"), await new_user("mallory")
    alice_xmpp, bob = await xmpp_peer("alice"), await xmpp_peer("bob")
    await alice_xmpp.stop()
    muc = f"rights{bob.nick}@{MUC}"
    await bob.join(muc)
    manage = await link_xmpp(alice, alice_xmpp, homeserver)
    theirs, mine = await rooms_for_the_test(alice, mallory)

    await alice.send_text(manage, f"map xmpp {muc} --room {theirs} --relay")
    refusal = await alice.wait_for_notice(manage, bot, "not joined")
    assert theirs in refusal

    await alice.client.join_room_by_id(theirs)  # a member, at power level 0
    await alice.send_text(manage, f"map xmpp {muc} --room {theirs} --relay")
    refusal = await alice.wait_for_notice(manage, bot, "Your power level in")
    assert "is 0; mapping into it needs 100" in refusal

    await alice.send_text(manage, "rules")
    await alice.wait_for_notice(manage, bot, "No mapping rules yet.")
    assert not await bot_members(mallory, theirs, bot)  # it looked, and left again

    # Her own room (she created it): mapped into it, and the MUC flows there.
    await alice.send_text(manage, f"map xmpp {muc} --room {mine}")
    await alice.wait_for_notice(manage, bot, f"Mapped xmpp {muc} into Jobb ({mine})")
    bob.send(muc, "into alice's room")
    await alice.wait_for_event(mine, body_is("into alice's room"), "bob's message")
    texts = [e.content.body for e in await mallory.room_events(theirs)
             if str(e.type) == "m.room.message"]
    assert texts == []


async def test_api_target_room_needs_membership_and_power(start_bridge, prosody, new_user,
                                                          xmpp_peer, homeserver):
    await start_bridge(extra={
        "networks": {"xmpp": {"enabled": True, "ca_file": str(prosody.ca),
                              "nameserver": prosody.nameserver}},
        "provisioning": {"shared_secret": SECRET}})
    alice, mallory = await new_user("alice"), await new_user("mallory")
    alice_xmpp, bob = await xmpp_peer("alice"), await xmpp_peer("bob")
    await alice_xmpp.stop()
    muc = f"apirights{bob.nick}@{MUC}"
    await bob.join(muc)
    await link_xmpp(alice, alice_xmpp, homeserver)
    theirs, mine = await rooms_for_the_test(alice, mallory)
    api = Api(homeserver.appservice_url)
    me = {"user_id": alice.mxid}
    rule = {"network": "xmpp", "remote": muc, "relay": True}
    try:
        status, error = await api.call("POST", f"{PREFIX}/rules", token=SECRET, query=me,
                                       body={**rule, "target_room": theirs})
        assert (status, error["errcode"]) == (403, "M_FORBIDDEN"), error
        assert "not joined" in error["error"]
        await alice.client.join_room_by_id(theirs)
        status, error = await api.call("POST", f"{PREFIX}/rules", token=SECRET, query=me,
                                       body={**rule, "target_room": theirs})
        assert (status, error["errcode"]) == (403, "M_FORBIDDEN"), error
        assert "is 0; mapping into it needs 100" in error["error"]
        status, error = await api.call("POST", f"{PREFIX}/rules", token=SECRET, query=me,
                                       body={**rule, "target_room": "general"})
        assert status == 403 and "not a Matrix room ID" in error["error"]
        status, rules = await api.call("GET", f"{PREFIX}/rules", token=SECRET, query=me)
        assert rules == {"rules": []}
        assert not await bot_members(mallory, theirs, homeserver.bot_mxid)

        status, made = await api.call("POST", f"{PREFIX}/rules", token=SECRET, query=me,
                                      body={**rule, "target_room": mine})
        assert (status, made["target_room"]) == (201, mine), made
        bob.send(muc, "via the api, into alice's room")
        await alice.wait_for_event(mine, body_is("via the api, into alice's room"), "bob")
    finally:
        await api.http.close()
