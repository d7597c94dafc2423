"""One person, several accounts on one network: each direct chat is its own portal, answered
by the account whose conversation it is; a shared room is written to by the account of the
rule that maps it, and an ambiguous one is refused with a notice, never guessed.

Real Prosody and Synapse for XMPP, the wire-level Slack fake for two workspaces; every test
runs on SQLite and PostgreSQL (the bridge fixtures are parametrized over both). Each test
links its accounts once and goes through every case on them.
"""

from __future__ import annotations

import pytest
from mautrix.types import EventType

from tests.fakes.slack import FakeSlack
from tests.fakes.slack.scenario import build_world

from .support.slack import authorise, slack_settings, start_link

MUC = "conference.rf.test"


def body_is(text: str):
    return lambda e: e.type == EventType.ROOM_MESSAGE and e.content.body == text


async def link_xmpp_in(user, room: str, peer, bot: str, profile: str) -> None:
    """Link an XMPP account through the bot, in an existing management room."""
    await user.send_text(room, f"link xmpp {peer.jid} --profile {profile}")
    await user.wait_for_notice(room, bot, "Send it as your next message")
    await user.send_text(room, peer.password)
    await user.wait_for_notice(room, bot, "Reply yes to link")
    await user.send_text(room, "yes")
    await user.wait_for_notice(room, bot, f"Linked xmpp:{peer.jid}")


async def portal_with(user, text: str) -> str:
    """The next room the user is invited to; it must show `text` from the remote side."""
    portal = await user.wait_for_invite()
    await user.wait_for_event(portal, body_is(text), repr(text), after=None)
    return portal


async def test_two_xmpp_accounts_answer_from_their_own_chats(xmpp_bridge, new_user, xmpp_peer,
                                                              homeserver):
    bot = homeserver.bot_mxid
    alice, carol = await new_user("alice"), await new_user("carol")
    home, work = await xmpp_peer("alicehome"), await xmpp_peer("alicework")
    carol_xmpp, bob = await xmpp_peer("carol"), await xmpp_peer("bob")
    for peer in (home, work, carol_xmpp):
        await peer.stop()  # only their credentials are needed: the bridge signs in as them
    room = await alice.open_management_room(bot)
    # Privat is linked first: the oldest account, which the bridge used to pick for everything.
    await link_xmpp_in(alice, room, home, bot, "Privat")
    await link_xmpp_in(alice, room, work, bot, "Jobb")

    # Bob writes to each of alice's accounts: two conversations, two portals.
    bob.send(work.jid, "to your work address", kind="chat")
    work_dm = await portal_with(alice, "to your work address")
    bob.send(home.jid, "to your home address", kind="chat")
    home_dm = await portal_with(alice, "to your home address")
    assert work_dm != home_dm

    # Alice answers in each; bob's client sees each answer from the account he wrote to.
    await alice.send_text(work_dm, "answer from work")
    got = await bob.wait_for(lambda m: m["body"] == "answer from work", "the work answer")
    assert (got["type"], got["from"].bare) == ("chat", work.jid)
    await alice.send_text(home_dm, "answer from home")
    got = await bob.wait_for(lambda m: m["body"] == "answer from home", "the home answer")
    assert (got["type"], got["from"].bare) == ("chat", home.jid)

    # A group chat mapped by someone else (carol): alice has no rule for it and two accounts,
    # so nothing says which one writes: refused with a notice naming both, nothing sent.
    muc = f"team{bob.nick}@{MUC}"
    await bob.join(muc)
    carol_room = await carol.open_management_room(bot)
    await link_xmpp_in(carol, carol_room, carol_xmpp, bot, "Jobb")
    await carol.send_text(carol_room, f"map xmpp {muc} --profile Jobb")
    await carol.wait_for_notice(carol_room, bot, f"Mapped xmpp {muc} into Jobb")
    muc_portal = await carol.wait_for_invite()
    await xmpp_bridge.bot.intent.invite_user(muc_portal, alice.mxid)
    await alice.client.join_room_by_id(muc_portal)
    await alice.send_text(muc_portal, "which of me is this?")
    refused = await alice.wait_for_notice(muc_portal, bot, "Several of your xmpp accounts")
    assert work.jid in refused and home.jid in refused and "map xmpp" in refused

    # Mapped in her Jobb profile, the room is written to from the work account.
    await alice.send_text(room, f"map xmpp {muc} --profile Jobb")
    await alice.wait_for_notice(room, bot, f"Mapped xmpp {muc} into Jobb")
    await alice.send_text(muc_portal, "from work, in the group")
    got = await bob.wait_for(lambda m: m["body"] == "from work, in the group", "the group line")
    assert got["from"].resource == work.nick
    assert not [m for m in bob.messages if m["body"] == "which of me is this?"]

    # Mapped in both of her profiles (neither of them the rule that brought the room in):
    # ambiguous again, and the notice says how to settle it.
    await alice.send_text(room, f"map xmpp {muc} --profile Privat")
    await alice.wait_for_notice(room, bot, f"Mapped xmpp {muc} into Privat")
    await alice.send_text(muc_portal, "and now?")
    refused = await alice.wait_for_notice(muc_portal, bot, "Several of your xmpp accounts")
    assert "unmap RULE" in refused
    bob.send(muc, "marker")
    await bob.wait_for(lambda m: m["body"] == "marker", "its own marker")
    assert not [m for m in bob.messages if m["body"] == "and now?"]


@pytest.fixture
async def slack():
    async with FakeSlack() as fake:
        yield fake


@pytest.fixture
async def slack_bridge(start_bridge, slack, homeserver):
    callback = f"{homeserver.appservice_url}/link/slack/callback"
    return await start_bridge(extra={"networks": {"slack": slack_settings(slack, callback)}})


async def link_slack_in(user, room: str, bot: str, slack: FakeSlack, person, profile: str
                        ) -> None:
    url = await start_link(user, bot, room, profile)
    status, _ = await authorise(slack, person, url)
    assert status == 200
    await user.wait_for_notice(room, bot, "Reply yes to link")
    await user.send_text(room, "yes")
    await user.wait_for_notice(room, bot, "Linked slack:")


async def test_two_slack_workspaces_answer_with_their_own_token(slack_bridge, slack, new_user,
                                                                homeserver):
    bot = homeserver.bot_mxid
    acme, globex = build_world(slack, "Acme"), build_world(slack, "Globex")
    alice = await new_user("alice")
    room = await alice.open_management_room(bot)
    await link_slack_in(alice, room, bot, slack, acme.alice, "Privat")  # the oldest
    await link_slack_in(alice, room, bot, slack, globex.alice, "Jobb")

    await slack.post_message(globex.bob, globex.dm, "hi from globex")
    globex_dm = await portal_with(alice, "hi from globex")
    await slack.post_message(acme.bob, acme.dm, "hi from acme")
    acme_dm = await portal_with(alice, "hi from acme")
    assert globex_dm != acme_dm

    # Each answer lands in its own workspace's DM, posted by that workspace's alice, with
    # that workspace's token (the fake checks the token against the channel's team).
    for portal, world, text in ((globex_dm, globex, "answer in globex"),
                                (acme_dm, acme, "answer in acme")):
        await alice.send_text(portal, text)
        await slack.wait_until(lambda w=world, t=text: t in [m.text for m in
                                                             slack.messages(w.dm)],
                               f"alice's answer in {world.team.name}")
        [sent] = [m for m in slack.messages(world.dm) if m.text == text]
        assert (sent.user, sent.team_id) == (world.alice.id, world.team.id)
        [post] = [c for c in slack.calls("chat.postMessage") if c.params.get("text") == text]
        assert slack.state.check_token(post.token).user == world.alice
    # Nothing crossed over into the other workspace.
    assert "answer in globex" not in [m.text for m in slack.messages(acme.dm)]
    assert "answer in acme" not in [m.text for m in slack.messages(globex.dm)]
