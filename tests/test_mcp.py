"""One MCP endpoint for a person's agents, end to end: the `mcp` SDK's client over streamable
HTTP with its OAuth flow through the bridge's sign-in and consent pages, real Synapse, a real
Prosody group chat and the Slack fake, on both databases. The agent reads a Slack channel,
sends, replies, edits, reacts and deletes in an XMPP group chat as the person (its first
message waits for the person's confirm), is refused by a capability rule naming it, stops when the
account is paused, and is cut off by `agents revoke`; the audit names it."""

from __future__ import annotations

import json

import httpx2
import pytest
from mautrix.types import EventType

from tests.fakes.slack import FakeSlack
from tests.fakes.slack.scenario import build_world

from .support.mcp import Agent, Consenting
from .support.slack import link_slack, slack_settings
from .test_xmpp import MUC, link_xmpp


@pytest.fixture
async def slack():
    async with FakeSlack() as fake:
        yield fake


async def test_an_agent_acts_across_networks_as_the_person(
        start_bridge, prosody, slack, new_user, xmpp_peer, homeserver, browser):
    world = build_world(slack)
    bridge = await start_bridge(extra={
        "networks": {
            "xmpp": {"enabled": True, "ca_file": str(prosody.ca),
                     "nameserver": prosody.nameserver},
            "slack": slack_settings(slack, f"{homeserver.appservice_url}/link/slack/callback")},
        "mcp": {"enabled": True}})
    bot = homeserver.bot_mxid
    alice = await new_user("alice")
    alice_xmpp, bob = await xmpp_peer("alice"), await xmpp_peer("bob")
    await alice_xmpp.stop()  # only its credentials are needed
    team, board = f"team{bob.nick}@{MUC}", f"board{bob.nick}@{MUC}"
    await bob.join(team)
    await bob.join(board)
    room = await link_xmpp(alice, alice_xmpp, homeserver)  # into Jobb
    portals = {}
    for muc in (team, board):
        await alice.send_text(room, f"map xmpp {muc} --profile Jobb")
        await alice.wait_for_notice(room, bot, f"Mapped xmpp {muc} into Jobb")
        portals[muc] = await alice.wait_for_invite()
    # Linking Slack opens a new management room: the bot answers there from now on.
    room = await link_slack(alice, bot, slack, world.alice, profile="Privat")
    await alice.send_text(room, f"map slack {world.team.id}/#general --profile Privat")
    await alice.wait_for_notice(room, bot, "Mapped slack")
    general = await alice.wait_for_invite()
    # The person narrows what this agent may do in the board room (a rule naming it).
    await alice.send_text(room, f"deny Jobb send on xmpp/*/{board} --agent Claude")
    await alice.wait_for_notice(room, bot, "your agent Claude may no longer send")

    async def login_token() -> str:
        await alice.send_text(room, "login-link")
        link = await alice.wait_for_notice(room, bot, "/auth/matrix?token=")
        return link.rsplit("token=", 1)[1].strip()

    consenting = Consenting(browser(), login_token)
    async with Agent(homeserver.appservice_url, "Claude", consenting) as agent:
        page = consenting.consent_page
        assert "Jobb" in page and "Privat" in page and "xmpp" in page and "slack" in page
        is_error, rooms = await agent.call("list_rooms")
        assert not is_error, rooms
        by_room = {r["room"]: r for r in rooms}
        assert set(by_room) == {*portals.values(), general}
        assert by_room[general]["network"] == "slack" and (
            by_room[general]["profile"] == "Privat")

        # It reads a Slack channel, with the sender's Slack id.
        await slack.post_message(world.bob, world.general, "standup at ten")
        await alice.wait_for_event(general, lambda e: e.type == EventType.ROOM_MESSAGE
                                   and e.content.body == "standup at ten", "bob's message")
        is_error, messages = await agent.call("read_messages", room=general)
        assert not is_error, messages
        [standup] = [m for m in messages if m["text"] == "standup at ten"]
        assert standup["network_sender"] == f"{world.team.id}/{world.bob.id}"
        assert not standup["is_you"]
        is_error, found = await agent.call("search", query="STANDUP")
        assert [m["id"] for m in found] == [standup["id"]]
        # The same as resources.
        read = await agent.client.read_resource(f"relayforge://rooms/{general}/messages")
        assert standup["id"] in read.contents[0].text
        read = await agent.client.read_resource("relayforge://profiles/Privat/rooms")
        assert [r["room"] for r in json.loads(read.contents[0].text)] == [general]

        # Its first message into the group chat waits for the person's confirm in Matrix.
        is_error, sent = await agent.call("send_message", room=portals[team],
                                          text="hello from the agent")
        assert not is_error and sent["status"] == "held", sent
        held = await alice.wait_for_notice(portals[team], bot, "first message into")
        assert "your agent Claude's first message" in held
        assert not [m for m in bob.messages if m["body"] == "hello from the agent"]
        await alice.send_text(room, "confirm")
        got = await bob.wait_for(lambda m: m["body"] == "hello from the agent", "the message")
        assert got["from"].resource == alice_xmpp.nick  # as alice herself
        # The person sees in the room what their agent sent, and who sent it.
        copies = await alice.notices_from(portals[team], bot)
        assert any(c.startswith(f"Claude (agent of {alice.mxid}): hello from the agent")
                   for c in copies), copies
        # From now on it goes straight out, also as a reply.
        bob.send(team, "what time?")
        asked = await alice.wait_for_event(portals[team], lambda e: e.type ==
                                           EventType.ROOM_MESSAGE
                                           and e.content.body == "what time?", "bob asks")
        is_error, sent = await agent.call("send_message", room=portals[team], text="ten",
                                          reply_to=asked.event_id)
        assert not is_error and sent["status"] == "sent", sent
        ten = await bob.wait_for(lambda m: m["body"] == "ten", "the reply")
        assert ten.get_plugin("reply", check=True) is not None
        # Edits and reactions go the same way.
        is_error, edited = await agent.call("edit_message", room=portals[team],
                                            message_id=sent["id"], text="ten thirty")
        assert not is_error, edited
        fixed = await bob.wait_for(lambda m: m["body"] == "ten thirty", "the correction")
        assert fixed["replace"]["id"] == ten["id"]
        is_error, reacted = await agent.call("react", room=portals[team],
                                             message_id=asked.event_id, emoji="👍")
        assert not is_error and reacted["status"] == "sent", reacted
        await bob.wait_for(lambda m: m.get_plugin("reactions", check=True)
                           and "👍" in m["reactions"]["values"], "the reaction")
        is_error, deleted = await agent.call("delete_message", room=portals[team],
                                             message_id=sent["id"])
        assert not is_error, deleted
        await bob.wait_for(lambda m: m.get_plugin("retract", check=True)
                           and m["from"].resource == alice_xmpp.nick, "the retraction")
        # Only what was sent as the person: not bob's message.
        is_error, text = await agent.call("delete_message", room=portals[team],
                                          message_id=asked.event_id)
        assert is_error and "Only messages sent as you" in text, text

        # A reply names a message of the same room only.
        is_error, text = await agent.call("send_message", room=general, text="y",
                                          reply_to=asked.event_id)
        assert is_error and "no bridged message" in text, text
        # Refusals are tool errors that name the rule.
        is_error, text = await agent.call("send_message", room=portals[board], text="x")
        assert is_error and "do not allow your agent Claude to send" in text, text
        assert not [m for m in bob.messages if m["body"] == "x"]

        # Pausing the linked account stops the agent there before its next call.
        ref = f"xmpp:{alice_xmpp.jid}"
        await alice.send_text(room, f"pause {ref}")
        await alice.wait_for_notice(room, bot, f"{ref} is now paused.")
        is_error, text = await agent.call("send_message", room=portals[team], text="paused?")
        assert is_error and "paused account" in text, text
        is_error, rooms = await agent.call("list_rooms")
        assert [r["room"] for r in rooms] == [general]
        await alice.send_text(room, f"resume {ref}")
        await alice.wait_for_notice(room, bot, f"{ref} is now active.")

        # The person lists and revokes it; its very next call is refused with 401.
        await alice.send_text(room, "agents")
        listing = await alice.wait_for_notice(room, bot, "Your agents:")
        assert "Claude: read, send, edit, delete, react on" in listing
        await alice.send_text(room, "agents revoke Claude")
        await alice.wait_for_notice(room, bot, "Revoked Claude")
        token = agent.tokens.tokens.access_token
    async with httpx2.AsyncClient() as http:
        r = await http.post(f"{homeserver.appservice_url}/mcp",
                            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                            headers={"Authorization": f"Bearer {token}",
                                     "Accept": "application/json, text/event-stream"})
    assert r.status_code == 401

    # Every act is in the audit log with the agent's name beside the person's account.
    account = await bridge.accounts.for_matrix_user(alice.mxid)
    sends = [json.loads(r.details) for r in await bridge.security.audit.latest(200)
             if r.event_type == "impersonated_send" and r.account == account.id]
    assert [(s["action"], s.get("agent")) for s in sends if s["channel"] == team] == [
        ("send", "Claude"), ("send", "Claude"), ("edit", "Claude"), ("react", "Claude"),
        ("delete", "Claude")]
    agent_records = [json.loads(r.details) for r in await bridge.security.audit.latest(200)
                     if r.event_type == "agent"]
    # Acts nothing waits on are forgotten after a while (database.prune_interval_seconds).
    assert await bridge.storage.db.fetchval("SELECT COUNT(*) FROM agent_act") == 5
    await bridge.storage.agents.prune(act_days=0)
    assert await bridge.storage.db.fetchval("SELECT COUNT(*) FROM agent_act") == 0
    assert [r["change"] for r in agent_records] == ["authorised", "refused", "refused",
                                                    "refused", "refused", "revoked"]
