"""Double puppeting end to end, on the real Synapse with both registrations (the session's
Synapse loads the second one, `url: null`, from tests/conftest.py) and the Slack fake: what a
person does from their own Slack client appears in Matrix as their real Matrix user, with
Slack's time, and never comes back out. Linked with the appservice-token method, or with a
client login (an access token of an account on the same Synapse, standing in for another
homeserver)."""

from __future__ import annotations

import aiohttp
from mautrix.types import EventType

from bridge.audit import AuditEvent
from bridge.db.persona import PersonaStatus
from tests.fakes.slack import FakeSlack
from tests.fakes.slack.scenario import build_world

from .conftest import SERVER_NAME
from .support.slack import link_slack, slack_settings


async def start(start_bridge, slack: FakeSlack, homeserver):
    callback = f"{homeserver.appservice_url}/link/slack/callback"
    return await start_bridge(extra={"networks": {"slack": slack_settings(slack, callback),
                                                  "matrix": {"enabled": True}}})


async def answer(user, room, bot, text: str, expect: str) -> str:
    await user.send_text(room, text)
    return await user.wait_for_notice(room, bot, expect)


def body_is(text: str):
    return lambda e: e.type == EventType.ROOM_MESSAGE and e.content.body == text


async def test_own_slack_messages_arrive_as_the_matrix_user(start_bridge, homeserver,
                                                            new_user):
    async with FakeSlack() as slack:
        world = build_world(slack)
        bridge = await start(start_bridge, slack, homeserver)
        bot = homeserver.bot_mxid
        alice = await new_user("alice")
        room = await link_slack(alice, bot, slack, world.alice)
        await alice.send_text(room, f"map slack {world.team.id}/#general --profile Jobb")
        portal = await alice.wait_for_invite()

        # Before: her own Slack message is her ghost's.
        await slack.post_message(world.alice, world.general, "as a ghost")
        ghosted = await alice.wait_for_event(portal, body_is("as a ghost"), "ghost", after=None)
        ghost = ghosted.sender
        assert ghost != alice.mxid

        # The appservice-token method: no password, verified with whoami.
        asked = await answer(alice, room, bot, "link matrix", "all your profiles")
        assert "double-puppeting registration" in asked
        consent = await answer(alice, room, bot, "all", "Reply yes")
        assert "whoami" in consent
        await answer(alice, room, bot, "yes", f"Linked matrix:{alice.mxid}")
        personas = await answer(alice, room, bot, "personas", f"matrix:{alice.mxid}")
        assert f"matrix:{alice.mxid} (active" in personas

        # A message, written an hour "later" on Slack's clock: Synapse keeps Slack's time.
        slack.advance_time(3600)
        sent = await slack.post_message(world.alice, world.general, "from my phone")
        mine = await alice.wait_for_event(portal, body_is("from my phone"), "own message",
                                          after=None)
        assert mine.sender == alice.mxid
        assert mine.timestamp == int(float(sent.ts) * 1000)
        # Her ghost left the room her real user is in.
        members = await alice.client.get_joined_members(portal)
        assert ghost not in members and alice.mxid in members

        # Edits, reactions and deletions from her own client, likewise.
        await slack.edit_message(world.alice, world.general, sent.ts, "from my phone!")
        edit = await alice.wait_for_event(portal, lambda e: e.type == EventType.ROOM_MESSAGE
                                          and e.content.get_edit() == mine.event_id, "edit",
                                          after=None)
        assert edit.sender == alice.mxid
        bobs = await slack.post_message(world.bob, world.general, "nice")
        nice = await alice.wait_for_event(portal, body_is("nice"), "bob's", after=None)
        await slack.add_reaction(world.alice, world.general, bobs.ts, "+1")
        reaction = await alice.wait_for_event(
            portal, lambda e: e.type == EventType.REACTION
            and e.content.relates_to.event_id == nice.event_id, "her reaction", after=None)
        assert reaction.sender == alice.mxid
        await slack.delete_message(world.general, sent.ts, user=world.alice)
        deletion = await alice.wait_for_event(
            portal, lambda e: e.type == EventType.ROOM_REDACTION
            and e.redacts == mine.event_id, "her deletion", after=None)
        assert deletion.sender == alice.mxid

        # Nothing went back out to Slack: no second copy, no second reaction, the edit is
        # Slack's own.
        await slack.post_message(world.bob, world.general, "marker")
        await alice.wait_for_event(portal, body_is("marker"), "marker", after=None)
        assert not [c for c in slack.requests if c.method in (
            "chat.postMessage", "chat.update", "chat.delete", "reactions.add")]

        # Every act through it is an impersonated send in the audit trail.
        account = await bridge.accounts.for_matrix_user(alice.mxid)
        persona = await bridge.accounts.find_persona(account.id, f"matrix:{alice.mxid}")
        acts = [r async for r in bridge.storage.audit_log.scan()
                if r.event_type == AuditEvent.IMPERSONATED_SEND and r.persona == persona.id]
        assert [a.details for a in acts if '"action":"send"' in a.details]
        assert len(acts) == 4  # send, edit, react, delete

        # Revoked: the ghost speaks again at once.
        await answer(alice, room, bot, f"revoke matrix:{alice.mxid}", "is now revoked")
        await slack.post_message(world.alice, world.general, "ghost again")
        again = await alice.wait_for_event(portal, body_is("ghost again"), "ghost again",
                                           after=None)
        assert again.sender == ghost


async def test_client_login_then_a_dead_token_goes_read_only(start_bridge, homeserver,
                                                             new_user):
    async with FakeSlack() as slack:
        world = build_world(slack)
        bridge = await start(start_bridge, slack, homeserver)
        bot = homeserver.bot_mxid
        alice = await new_user("alice")
        # Her second Matrix account, on "another homeserver" (the same Synapse, for which
        # the bridge uses a client login since it is not the one asking).
        other = await new_user("alice2")
        room = await link_slack(alice, bot, slack, world.alice)
        await alice.send_text(room, f"map slack {world.team.id}/#general --profile Jobb")
        portal = await alice.wait_for_invite()

        asked = await answer(alice, room, bot, f"link matrix {other.mxid}", "all your profiles")
        assert "client login" in asked
        await answer(alice, room, bot, "all", "password")
        await alice.send_text(room, other.client.api.token)
        await alice.wait_for_notice(room, bot, "Reply yes")
        await answer(alice, room, bot, "yes", f"Linked matrix:{other.mxid}")
        # The token the prompt carried was redacted at once.
        prompts = [e for e in await alice.room_events(room)
                   if e.sender == alice.mxid and e.type == EventType.ROOM_MESSAGE
                   and other.client.api.token in (e.content.body or "")]
        assert prompts == []
        await slack.post_message(world.alice, world.general, "via token")
        via = await alice.wait_for_event(portal, body_is("via token"), "via token", after=None)
        assert via.sender == other.mxid

        # The token dies (logged out elsewhere): read-only, the ghost speaks, relink asked.
        await other.client.logout()
        await slack.post_message(world.alice, world.general, "after logout")
        after = await alice.wait_for_event(portal, body_is("after logout"), "after logout",
                                           after=None)
        assert after.sender != other.mxid
        await alice.wait_for_notice(room, bot, f"relink matrix:{other.mxid}", after=None)
        account = await bridge.accounts.for_matrix_user(alice.mxid)
        persona = await bridge.accounts.find_persona(account.id, f"matrix:{other.mxid}")
        assert persona.status == PersonaStatus.READ_ONLY

        # Relinked with a fresh token (one the homeserver gives the second registration for
        # any of its users): her own user speaks again.
        fresh = await fresh_token(homeserver, other.mxid)
        await answer(alice, room, bot, f"relink matrix:{other.mxid}", "all your profiles")
        await answer(alice, room, bot, "all", "password")
        await answer(alice, room, bot, fresh, "Reply yes")
        await answer(alice, room, bot, "yes", f"Linked matrix:{other.mxid}")
        await slack.post_message(world.alice, world.general, "relinked")
        back = await alice.wait_for_event(portal, body_is("relinked"), "relinked", after=None)
        assert back.sender == other.mxid


async def fresh_token(homeserver, mxid: str) -> str:
    secret = homeserver.base["double_puppet"]["secrets"][SERVER_NAME].removeprefix("as_token:")
    async with aiohttp.ClientSession() as http, http.post(
            f"{homeserver.synapse.url}/_matrix/client/v3/login",
            headers={"Authorization": f"Bearer {secret}"},
            json={"type": "m.login.application_service",
                  "identifier": {"type": "m.id.user", "user": mxid}}) as response:
        assert response.status == 200, await response.text()
        return (await response.json())["access_token"]


async def test_auto_links_on_first_contact(start_bridge, homeserver, new_user):
    bridge = await start_bridge(extra={"networks": {"matrix": {"enabled": True}},
                                       "double_puppet": {"auto": True}})
    bot = homeserver.bot_mxid
    erin = await new_user("erin")
    room = await erin.open_management_room(bot)
    told = await erin.wait_for_notice(room, bot, "will appear as you")
    assert f"revoke matrix:{erin.mxid}" in told
    account = await bridge.accounts.for_matrix_user(erin.mxid)
    persona = await bridge.accounts.find_persona(account.id, f"matrix:{erin.mxid}")
    assert persona.status == PersonaStatus.ACTIVE
    kinds = [(r.event_type, r.actor) for r in await bridge.security.audit.latest(
        20, who=account.id)]
    assert (AuditEvent.LINK.value, "double_puppet.auto") in kinds
    # A second management room (a second first contact) links nothing twice.
    await erin.send_text(room, "personas")
    listed = await erin.wait_for_notice(room, bot, "matrix:")
    assert listed.count(f"matrix:{erin.mxid}") == 1
