"""Slack end to end: the unmodified slack-sdk inside the bridge talks to the wire-level fake
(tests/fakes/slack); Matrix is the real Synapse. Linking through Slack's OAuth page, mapping
rules, and messages both ways as the person."""

from __future__ import annotations

import time

import pytest
from mautrix.types import (
    EventType,
    Format,
    MediaMessageEventContent,
    MessageType,
    TextMessageEventContent,
)

from tests.fakes.slack.scenario import World

from .support.api import PREFIX, Api
from .support.recording import RecordingServer
from .support.slack import (
    authorise,
    browser_session,
    link_slack,
    open_in_browser,
    open_start_link,
    slack_settings,
    start_link,
)
from .support.slack_history import slack, world

__all__ = ["slack", "world"]  # the Slack fake and its world, as fixtures


@pytest.fixture
async def slack_bridge(start_bridge, slack, homeserver):
    callback = f"{homeserver.appservice_url}/link/slack/callback"
    return await start_bridge(extra={"networks": {"slack": slack_settings(slack, callback)}})


def body_is(text: str):
    return lambda e: e.type == EventType.ROOM_MESSAGE and e.content.body == text


async def test_linking_through_slacks_page(slack_bridge, slack, world, new_user, homeserver):
    alice = await new_user("alice")
    bot = homeserver.bot_mxid
    room = await alice.open_management_room(bot)
    url = await start_link(alice, bot, room)
    # The bot's link leads to the bridge's own page first, which binds the flow to the
    # browser that opens it.
    assert url.startswith(f"{homeserver.appservice_url}/link/slack/start?flow=")
    async with browser_session() as mine, browser_session() as victims:
        page, authorize = await open_start_link(mine, url)
        # Before anything happens, the page says whose RelayForge account it links into.
        assert alice.mxid in page and "Jobb" in page
        assert authorize.startswith(slack.authorize_endpoint)
        assert "code_challenge=" in authorize and "code_challenge_method=S256" in authorize
        # The start link works once: another browser cannot take the flow over.
        async with victims.get(url) as r:
            assert r.status == 400
        # Slack's page, sent to someone else (bob) who allows it there: his browser comes
        # back to the bridge and is refused; nothing of bob's is linked into alice's account.
        slack.sign_in(world.bob)
        _, _, back = await open_in_browser(authorize)
        async with victims.get(back) as r:
            assert r.status == 400 and "another browser" in await r.text()
        assert not [c for c in slack.calls("oauth.v2.access") if c.ok]
        # Nothing was used up: the browser that opened the start link goes on.
        slack.sign_in(world.alice)
        _, _, back = await open_in_browser(authorize)
        async with mine.get(back) as r:
            assert r.status == 200 and "management room" in await r.text()
    consent = await alice.wait_for_notice(room, bot, "Reply yes to link")
    assert f"{world.team.id}/{world.alice.id}" in consent
    assert f"RelayForge account of {alice.mxid}" in consent
    assert "send, edit and delete messages as you (chat:write)" in consent
    assert "read messages in your public channels (channels:history)" in consent
    # The code was exchanged with the PKCE verifier, and the token proven before consent.
    exchange = slack.calls("oauth.v2.access")[-1]
    assert exchange.ok and exchange.params.get("code_verifier")
    assert [c.ok for c in slack.calls("auth.test")][-1]
    await alice.send_text(room, "yes")
    linked = await alice.wait_for_notice(room, bot, "Linked slack:")
    assert f"slack:{world.team.id}/{world.alice.id}" in linked

    # The state is single-use: the same callback again is refused, and says what to do.
    status, page, _ = await open_in_browser(
        f"{homeserver.appservice_url}/link/slack/callback?state=forged&code=x")
    assert status == 400 and "link slack" in page


async def test_messages_both_ways_as_the_person(slack_bridge, slack, world, new_user,
                                                homeserver):
    alice = await new_user("alice")
    bot = homeserver.bot_mxid
    room = await link_slack(alice, bot, slack, world.alice)
    await alice.send_text(room, f"map slack {world.team.id}/#general --profile Jobb")
    await alice.wait_for_notice(room, bot, "Mapped slack")
    portal = await alice.wait_for_invite()

    # Slack -> Matrix, with formatting and a mention of a linked person's ghost.
    await slack.post_message(world.bob, world.general, f"*hello* from <@{world.carol.id}>")
    hello = await alice.wait_for_event(
        portal, lambda e: e.type == EventType.ROOM_MESSAGE and "hello" in e.content.body,
        "bob's message")
    assert "<strong>hello</strong>" in hello.content.formatted_body
    assert "matrix.to" in hello.content.formatted_body
    member = await alice.client.get_state_event(portal, EventType.ROOM_MEMBER, hello.sender)
    assert member.displayname.startswith("Bobby")

    # Matrix -> Slack, as alice with her own token, formatted as mrkdwn.
    await alice.client.send_message(portal, _html("hi <b>Bob</b>", "hi Bob"))
    await slack.wait_until(lambda: any(m.text == "hi *Bob*"
                                       for m in slack.messages(world.general)),
                           "alice's message in Slack")
    post = slack.calls("chat.postMessage")[-1]
    assert slack.token(post.token).user.id == world.alice.id

    # Threads both ways.
    root = next(m for m in slack.messages(world.general) if m.text == "hi *Bob*")
    await slack.post_message(world.bob, world.general, "in the thread", thread_ts=root.ts)
    threaded = await alice.wait_for_event(portal, body_is("in the thread"), "thread reply")
    assert threaded.content.get_thread_parent() is not None


def _html(html: str, body: str) -> TextMessageEventContent:
    return TextMessageEventContent(msgtype=MessageType.TEXT, body=body,
                                   format=Format.HTML, formatted_body=html)


async def test_edits_deletes_reactions_and_files_both_ways(slack_bridge, slack, world,
                                                           new_user, homeserver):
    alice = await new_user("alice")
    bot = homeserver.bot_mxid
    room = await link_slack(alice, bot, slack, world.alice)
    await alice.send_text(room, f"map slack {world.team.id}/#general --profile Jobb")
    portal = await alice.wait_for_invite()
    general = world.general

    # Slack -> Matrix: an edit, a reaction, a delete, a file.
    bobs = await slack.post_message(world.bob, general, "frist")
    first = await alice.wait_for_event(portal, body_is("frist"), "bob's message")
    await slack.edit_message(world.bob, general, bobs.ts, "first")
    edit = await alice.wait_for_event(portal, lambda e: e.type == EventType.ROOM_MESSAGE
                                      and e.content.get_edit() == first.event_id, "the edit")
    assert edit.content.body == "first"
    await slack.add_reaction(world.bob, general, bobs.ts, "+1")
    reaction = await alice.wait_for_event(portal, lambda e: e.type == EventType.REACTION,
                                          "bob's reaction")
    assert reaction.content.relates_to.key == "👍"
    await slack.upload_file(world.bob, general, "notes.txt", b"remember the milk")
    shared = await alice.wait_for_event(portal, body_is("notes.txt"), "bob's file")
    assert await alice.client.download_media(shared.content.url) == b"remember the milk"
    await slack.delete_message(general, bobs.ts, user=world.bob)
    await alice.wait_for_event(portal, lambda e: e.type == EventType.ROOM_REDACTION
                               and e.redacts == first.event_id, "the deletion")

    # Matrix -> Slack: alice's message, edited, reacted to, deleted; a file.
    mine = await alice.send_text(portal, "draft")
    await slack.wait_until(lambda: any(m.text == "draft" for m in slack.messages(general)),
                           "alice's message")
    ts = next(m.ts for m in slack.messages(general) if m.text == "draft")
    await alice.send_text(portal, "final", edit_of=mine)
    await slack.wait_until(lambda: any(m.ts == ts and m.text == "final"
                                       for m in slack.messages(general)), "the edit")
    await alice.client.react(portal, mine, "🎉")
    await slack.wait_until(lambda: any(m.ts == ts and world.alice.id in m.reactions.get(
        "tada", []) for m in slack.messages(general)), "alice's reaction")
    await alice.client.redact(portal, mine)
    await slack.wait_until(lambda: not any(m.ts == ts for m in slack.messages(general)),
                           "the deletion")
    mxc = await alice.client.upload_media(b"a picture", mime_type="image/png",
                                          filename="pic.png")
    await alice.client.send_message(portal, MediaMessageEventContent(
        msgtype=MessageType.IMAGE, body="pic.png", url=mxc))
    await slack.wait_until(lambda: any(f.name == "pic.png" for m in slack.messages(general)
                                       for f in m.files), "alice's file")
    # Nothing the bridge did came back into Matrix as if someone else had done it.
    bodies = [e.content.body for e in await alice.room_events(portal)
              if e.type == EventType.ROOM_MESSAGE and e.sender != alice.mxid]
    assert "draft" not in bodies and "final" not in bodies


async def test_only_mapped_channels_come_in_and_dms_always(slack_bridge, slack, world,
                                                           new_user, homeserver):
    alice = await new_user("alice")
    bot = homeserver.bot_mxid
    room = await link_slack(alice, bot, slack, world.alice)
    await slack.post_message(world.bob, world.secret, "not mapped: stays in Slack")
    await slack.post_message(world.bob, world.dm, "psst, alice")
    dm = await alice.wait_for_invite()
    psst = await alice.wait_for_event(dm, body_is("psst, alice"), "bob's direct message")
    name = await alice.client.get_state_event(dm, EventType.ROOM_NAME)
    assert name.name == "Bobby"
    await alice.send_text(dm, "hi bob")
    await slack.wait_until(lambda: "hi bob" in [m.text for m in slack.messages(world.dm)],
                           "alice's answer in the DM")
    # A name change on Slack reaches the ghost.
    await slack.update_user(world.bob, display_name="Robert")
    renamed = await alice.wait_for_event(
        dm, lambda e: e.type == EventType.ROOM_MEMBER
        and (e.content.displayname or "").startswith("Robert"), "bob's new name")
    assert renamed.state_key == psst.sender
    for joined in await alice.client.get_joined_rooms():
        if joined != room:
            assert not any(getattr(e.content, "body", None) == "not mapped: stays in Slack"
                           for e in await alice.room_events(joined))


async def test_linking_through_the_provisioning_api(start_bridge, slack, world, new_user,
                                                    homeserver):
    secret = "s" * 40
    await start_bridge(extra={"networks": {"slack": slack_settings(
        slack, f"{homeserver.appservice_url}/link/slack/callback")},
        "provisioning": {"shared_secret": secret}})
    alice = await new_user("alice")
    api = Api(homeserver.appservice_url)
    me = {"user_id": alice.mxid}
    try:
        status, networks = await api.call("GET", f"{PREFIX}/networks", token=secret, query=me)
        assert {"name": "slack", "login_flows": ["oauth"]} in networks["networks"]
        status, step = await api.call("POST", f"{PREFIX}/link/slack", token=secret, query=me,
                                      body={"profile": "Privat"})
        assert status == 200 and step["url"].startswith(
            f"{homeserver.appservice_url}/link/slack/start?flow=")
        status, _ = await api.call("GET", f"{PREFIX}/link/steps/{step['flow_id']}",
                                         token=secret, query=me)
        assert status == 404  # the browser has not been to Slack yet
        status, _ = await authorise(slack, world.alice, step["url"])
        assert status == 200
        status, consent = await api.call("GET", f"{PREFIX}/link/steps/{step['flow_id']}",
                                         token=secret, query=me)
        assert status == 200 and consent["fields"][0]["name"] == "consent"
        assert "(chat:write)" in consent["message"]
        status, done = await api.call("POST", f"{PREFIX}/link/steps/{consent['flow_id']}",
                                      token=secret, query=me,
                                      body={"answers": {"consent": "yes"}})
        assert status == 200 and done["done"] is True
        assert done["persona"]["profile"] == "Privat"
        assert done["persona"]["descriptor"]["external_user_id"] == (
            f"{world.team.id}/{world.alice.id}")
    finally:
        await api.http.close()


async def test_a_pattern_rule_maps_channels_the_person_joins(slack_bridge, slack, world,
                                                             new_user, homeserver):
    alice = await new_user("alice")
    bot = homeserver.bot_mxid
    room = await link_slack(alice, bot, slack, world.alice)
    await alice.send_text(room, f"map slack {world.team.id}/* --profile Jobb")
    await alice.wait_for_notice(room, bot, "will be mapped")
    launch = slack.create_channel(world.team, "launch", [world.bob])
    await slack.join_channel(world.alice, launch)
    portal = await alice.wait_for_invite()
    name = await alice.client.get_state_event(portal, EventType.ROOM_NAME)
    assert name.name == "#launch"
    await slack.post_message(world.bob, launch, "welcome aboard")
    await alice.wait_for_event(portal, body_is("welcome aboard"), "bob's welcome")


async def test_the_persons_token_never_leaves_for_another_host(start_bridge, slack, world,
                                                               new_user, homeserver):
    """URLs in Slack events are fetched by the core's media fetcher: the token goes to
    Slack's (here: the fake's) host only, never to a host an event or a redirect names, and
    internal addresses are refused with a notice while the message itself arrives."""
    foreign, internal = await RecordingServer().start(), await RecordingServer().start()
    try:
        # Both are on loopback; the admin trusts `foreign` (so it can be reached and show
        # what it received) but not `internal`.
        callback = f"{homeserver.appservice_url}/link/slack/callback"
        await start_bridge(extra={"networks": {"slack": slack_settings(slack, callback)},
                                  "media": {"trusted_hosts": [foreign.host]}})
        alice = await new_user("alice")
        bot = homeserver.bot_mxid
        await link_slack(alice, bot, slack, world.alice)

        # A file event whose URL points at another host: fetched without the token.
        planted = foreign.serve("/planted.txt", b"planted", "text/plain")
        await slack.emit_event(world.team, _file_event(world, "planted.txt", planted),
                               channel=world.dm)
        dm = await alice.wait_for_invite()
        shared = await alice.wait_for_event(dm, body_is("planted.txt"), "the planted file")
        assert await alice.client.download_media(shared.content.url) == b"planted"

        # A file on Slack's own host that redirects elsewhere: the token reaches Slack (the
        # download is authorised) and is dropped for the redirect's target.
        moved = foreign.serve("/storage/moved.txt", b"moved along", "text/plain")
        await slack.upload_file(world.bob, world.dm, "moved.txt", b"-", moved_to=moved)
        shared = await alice.wait_for_event(dm, body_is("moved.txt"), "the moved file")
        assert await alice.client.download_media(shared.content.url) == b"moved along"

        # A profile picture on another host (Slack's avatar CDN is not Slack's file host).
        picture = foreign.serve("/avatars/bob.png", b"\x89PNG fake", "image/png")
        await slack.emit_event(world.team, {"type": "user_change", "user": {
            "id": world.bob.id, "name": "bob", "profile": {
                "display_name": "Bobby", "image_192": picture}}})
        await slack.wait_until(lambda: any(s.path == "/avatars/bob.png" for s in foreign.seen),
                               "the avatar download")
        assert [s.path for s in foreign.seen] == [
            "/planted.txt", "/storage/moved.txt", "/avatars/bob.png"]
        assert foreign.authorizations() == [None, None, None]

        # An internal address: nothing is fetched, the name arrives, and the room is told.
        secret = internal.serve("/admin/backup.tar", b"internal only")
        await slack.emit_event(world.team, _file_event(world, "backup.tar", secret),
                               channel=world.dm)
        await alice.wait_for_event(dm, body_is("backup.tar"), "the refused file's name")
        notice = await alice.wait_for_notice(dm, bot, "backup.tar was not bridged")
        assert notice == ("The file backup.tar was not bridged: its address is not allowed "
                          "(a loopback address).")
        assert internal.seen == []
    finally:
        await foreign.stop()
        await internal.stop()


def _file_event(world: World, name: str, url: str) -> dict:
    """A file_share message as an event delivers it, with the file's URL chosen by the test."""
    ts = f"{time.time():.6f}"
    return {"type": "message", "subtype": "file_share", "channel": world.dm.id,
            "channel_type": "im", "user": world.bob.id, "ts": ts, "text": "",
            "files": [{"id": f"F{ts.replace('.', '')}", "name": name,
                       "mimetype": "application/octet-stream", "url_private": url}]}
