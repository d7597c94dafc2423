"""Slack when things go wrong: a revoked token mid-conversation, a 429 storm, forged Events
API requests, Enterprise Grid's MFA gate, and token rotation."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from itertools import pairwise

import pytest
from mautrix.types import EventType

from tests.fakes.slack import FakeSlack
from tests.fakes.slack.scenario import build_world

from .support.slack import authorise, link_slack, slack_settings, start_link


@pytest.fixture
async def slack():
    async with FakeSlack() as fake:
        yield fake


def callback(homeserver) -> str:
    return f"{homeserver.appservice_url}/link/slack/callback"


async def mapped(slack, world, alice, homeserver) -> tuple[str, str]:
    room = await link_slack(alice, homeserver.bot_mxid, slack, world.alice)
    await alice.send_text(room, f"map slack {world.team.id}/#general --profile Jobb")
    return room, await alice.wait_for_invite()


def texts(slack, channel) -> list[str]:
    return [m.text for m in slack.messages(channel)]


async def test_revoked_token_turns_read_only_and_relink_delivers(start_bridge, slack,
                                                                 new_user, homeserver):
    world = build_world(slack)
    bridge = await start_bridge(extra={"networks": {"slack": slack_settings(
        slack, callback(homeserver))}})
    alice = await new_user("alice")
    bot = homeserver.bot_mxid
    room, portal = await mapped(slack, world, alice, homeserver)
    await slack.post_message(world.bob, world.general, "hi")
    await alice.wait_for_event(portal, lambda e: e.type == EventType.ROOM_MESSAGE
                               and e.content.body == "hi", "bob's hi")
    await alice.send_text(portal, "before")
    await slack.wait_until(lambda: "before" in texts(slack, world.general), "before")
    token = slack.calls("chat.postMessage")[-1].token
    await slack.revoke_token(token)

    await alice.send_text(portal, "during 1")
    ref = f"slack:{world.team.id}/{world.alice.id}"
    prompt = await alice.wait_for_notice(room, bot, "read-only")
    assert f"relink {ref}" in prompt and "token_revoked" in prompt
    # Said in the room once the persona's turn to read-only is complete (hooks included).
    await alice.wait_for_notice(portal, bot, "refused the bridge's access")
    account = await bridge.accounts.for_matrix_user(alice.mxid)
    persona = await bridge.accounts.find_persona(account.id, ref)
    # One refused send is one failure towards anomaly detection, not two.
    assert await bridge.storage.failures.pending(account.id, persona.id, 0) == 1
    await alice.send_text(portal, "during 2")
    refused = [c for c in slack.calls("chat.postMessage") if c.error == "token_revoked"]
    assert len(refused) == 1  # read-only within one failed send
    # Inbound keeps flowing meanwhile.
    await slack.post_message(world.bob, world.general, "still there?")
    await alice.wait_for_event(portal, lambda e: e.type == EventType.ROOM_MESSAGE
                               and e.content.body == "still there?", "inbound while read-only")

    url = await start_link(alice, bot, room, command=f"relink {ref}")
    status, page = await authorise(slack, world.alice, url)
    assert status == 200, page
    await alice.wait_for_notice(room, bot, "Reply yes to link")
    await alice.send_text(room, "yes")
    await slack.wait_until(lambda: texts(slack, world.general)[-2:] == ["during 1", "during 2"],
                           "the queued messages, in order")
    account = await bridge.accounts.for_matrix_user(alice.mxid)
    persona = await bridge.accounts.find_persona(account.id, ref)
    assert persona.status.value == "active"


async def test_a_429_storm_delays_but_loses_nothing(start_bridge, slack, new_user,
                                                    homeserver):
    world = build_world(slack)
    await start_bridge(extra={"networks": {"slack": slack_settings(
        slack, callback(homeserver))}, "delivery": {"max_attempts": 3}})
    alice = await new_user("alice")
    _, portal = await mapped(slack, world, alice, homeserver)
    slack.rate_limit("chat.postMessage", retry_after=1, duration=3)
    for i in range(5):
        await alice.send_text(portal, f"storm {i}")
    await slack.wait_until(lambda: [t for t in texts(slack, world.general)
                                    if t.startswith("storm")] == [f"storm {i}"
                                                                  for i in range(5)],
                           "the whole storm, in order")
    calls = slack.calls("chat.postMessage")
    assert any(c.status == 429 for c in calls)
    # After each 429, nothing was tried again before its Retry-After (1 s) had passed; and
    # 429s never used up the 3 attempts.
    for refused, following in pairwise(calls):
        if refused.status == 429:
            assert following.at - refused.at >= 1.0


async def test_events_api_takes_only_signed_fresh_requests(start_bridge, slack, new_user,
                                                           homeserver):
    world = build_world(slack)
    slack.app.socket_mode = False
    slack.app.request_url = f"{homeserver.appservice_url}/slack/events"
    await start_bridge(extra={"networks": {"slack": slack_settings(
        slack, callback(homeserver), inbound="events_api")}})
    alice = await new_user("alice")
    _, portal = await mapped(slack, world, alice, homeserver)
    verification = await slack.events_http.url_verification(slack.app, "abc")
    assert verification.status == 200 and json.loads(verification.response_text) == {
        "challenge": "abc"}

    await slack.post_message(world.bob, world.general, "signed")
    await alice.wait_for_event(portal, lambda e: e.type == EventType.ROOM_MESSAGE
                               and e.content.body == "signed", "the signed event")
    forged_body = json.dumps({**slack.sent_events[-1], "event_id": "Ev-forged", "event": {
        **slack.sent_events[-1]["event"], "text": "forged", "ts": "1.000001"}}).encode()
    forged = await slack.events_http.post(slack.app, forged_body, signature="v0=" + "0" * 64)
    stale = await slack.events_http.post(slack.app, forged_body, timestamp="1000000000")
    assert (forged.status, stale.status) == (401, 401)
    await slack.post_message(world.bob, world.general, "marker")
    await alice.wait_for_event(portal, lambda e: e.type == EventType.ROOM_MESSAGE
                               and e.content.body == "marker", "the marker")
    bodies = [e.content.body for e in await alice.room_events(portal)
              if e.type == EventType.ROOM_MESSAGE]
    assert "forged" not in bodies


async def test_enterprise_grid_install_needs_mfa(start_bridge, slack, new_user, homeserver):
    grid = slack.create_enterprise("Megacorp")
    team = slack.create_team("Megacorp EU", enterprise=grid)
    person = slack.create_user(team, "erin")
    await start_bridge(extra={"networks": {"slack": slack_settings(
        slack, callback(homeserver))}, "policy": {"high_risk": {"slack_enterprise_grid": True}}})
    alice = await new_user("alice")
    bot = homeserver.bot_mxid
    room = await alice.open_management_room(bot)
    url = await start_link(alice, bot, room)
    status, page = await authorise(slack, person, url, enterprise_install=True)
    assert status == 400 and "multi-factor" in page and "mfa setup" in page
    await alice.send_text(room, "personas")
    assert "No linked accounts yet" in await alice.wait_for_notice(room, bot, "")


async def test_token_rotation_refreshes_and_audits(start_bridge, slack, new_user, homeserver):
    world = build_world(slack)
    slack.app.token_rotation = True
    slack.app.token_lifetime = 30  # inside the bridge's margin: it refreshes before each call
    bridge = await start_bridge(extra={"networks": {"slack": slack_settings(
        slack, callback(homeserver), token_rotation=True)}})
    alice = await new_user("alice")
    room, portal = await mapped(slack, world, alice, homeserver)
    await alice.wait_for_notice(room, homeserver.bot_mxid, "Mapped")
    before = datetime.now(UTC)
    await alice.send_text(portal, "rotated")
    await slack.wait_until(lambda: "rotated" in texts(slack, world.general), "the message")
    refreshes = [c for c in slack.calls("oauth.v2.access")
                 if c.params.get("grant_type") == "refresh_token"]
    assert refreshes and all(c.ok for c in refreshes)
    account = await bridge.accounts.for_matrix_user(alice.mxid)
    kinds = [r.event_type for r in await bridge.security.audit.latest(50, who=account.id)]
    assert "token_refresh" in kinds
    # Only the refresh token is kept, sealed; never the access token.
    persona = await bridge.accounts.find_persona(
        account.id, f"slack:{world.team.id}/{world.alice.id}")
    assert await bridge.storage.vault_secrets.get(*persona.vault_ref, "access_token") is None
    assert await bridge.storage.vault_secrets.get(*persona.vault_ref, "refresh_token")
    # The descriptor: Slack's picture of the account at linking, and the latest refresh.
    assert persona.avatar_hash == world.alice.avatar_hash
    assert datetime.fromisoformat(persona.last_refresh) >= before
    await alice.send_text(room, "personas")
    shown = await alice.wait_for_notice(room, homeserver.bot_mxid, "credentials checked")
    assert f"picture {world.alice.avatar_hash}" in shown


async def test_a_refused_token_refresh_turns_read_only_with_the_relink_prompt(
        start_bridge, slack, new_user, homeserver):
    world = build_world(slack)
    slack.app.token_rotation = True
    slack.app.token_lifetime = 30  # inside the bridge's margin: it refreshes before each call
    bridge = await start_bridge(extra={"networks": {"slack": slack_settings(
        slack, callback(homeserver), token_rotation=True)}})
    alice = await new_user("alice")
    bot = homeserver.bot_mxid
    room, portal = await mapped(slack, world, alice, homeserver)
    await alice.wait_for_notice(room, bot, "Mapped")
    slack.clear_requests()
    slack.revoke_refresh_tokens(world.alice)  # the sealed refresh token stops working

    await alice.send_text(portal, "after the refresh token died")
    ref = f"slack:{world.team.id}/{world.alice.id}"
    prompt = await alice.wait_for_notice(room, bot, "read-only")
    assert f"relink {ref}" in prompt and "invalid_refresh_token" in prompt
    await alice.wait_for_notice(portal, bot, f"relink {ref}")
    refreshes = [c for c in slack.calls("oauth.v2.access")
                 if c.params.get("grant_type") == "refresh_token"]
    assert refreshes and {c.error for c in refreshes} == {"invalid_refresh_token"}
    assert not slack.calls("chat.postMessage")  # nothing was sent with a stale token
    account = await bridge.accounts.for_matrix_user(alice.mxid)
    persona = await bridge.accounts.find_persona(account.id, ref)
    assert persona.status.value == "read_only"
