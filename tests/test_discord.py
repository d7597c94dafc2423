"""Discord end to end: the unmodified discord.py inside the bridge talks to the wire-level fake
(tests/fakes/discord); Matrix is the real Synapse. One bridge, one fake and one linked account
per database for the whole module (linking is the slow part), each test in channels and
threads of its own."""

from __future__ import annotations

import pytest
from mautrix.types import (
    EventType,
    Format,
    MediaMessageEventContent,
    MessageType,
    RoomType,
    TextMessageEventContent,
)

from tests.fakes.discord.models import Attachment, snowflake

from .support.discord import PNG, Env, authorise, contents, db_kind, env, link_discord
from .support.slack import start_link

pytestmark = pytest.mark.asyncio(loop_scope="module")
__all__ = ["db_kind", "env"]  # the module's shared bridge, fake and linked account


def body_is(text: str):
    return lambda e: e.type == EventType.ROOM_MESSAGE and e.content.body == text


def html(formatted: str, body: str) -> TextMessageEventContent:
    return TextMessageEventContent(msgtype=MessageType.TEXT, body=body, format=Format.HTML,
                                   formatted_body=formatted)


async def test_linking_through_discords_page(env: Env):
    discord, world = env.discord, env.world
    # The authorisation asked for exactly `identify guilds`, with PKCE and the exact callback.
    asked = discord.oauth.authorize_requests[0]
    assert asked["scope"] == "identify guilds"
    assert asked["code_challenge_method"] == "S256" and asked["code_challenge"]
    assert asked["redirect_uri"] == discord.app.redirect_uris[0]
    assert asked["redirect_uri"].endswith("/link/discord/callback")
    exchange = discord.calls("/oauth2/token")[0]
    assert exchange.ok and exchange.form["code_verifier"]
    # The verification ping came before the consent, which says what will happen.
    assert discord.calls("/users/@me/guilds")[0].ok
    assert f"Verified {world.alice.id} on discord" in env.consent
    assert "can see 1 server(s): Acme" in env.consent
    assert "reactions are added by the RelayForge bot" in env.consent
    assert "(identify)" in env.consent and "(guilds)" in env.consent
    # Only the refresh token is kept, sealed; never the access token.
    account = await env.bridge.accounts.for_matrix_user(env.alice.mxid)
    persona = await env.bridge.accounts.find_persona(account.id, f"discord:{world.alice.id}")
    rows = await env.bridge.storage.db.fetch(
        "SELECT field FROM vault_secret WHERE profile=$1 AND persona=$2", *persona.vault_ref)
    assert [r["field"] for r in rows] == ["refresh_token"]
    values = await env.bridge.storage.db.fetch("SELECT * FROM vault_secret")
    grant = discord.grants[0]
    assert all(grant.refresh_token.encode() not in repr(dict(r)).encode() for r in values)


async def test_a_corporate_server_needs_fresh_mfa(env: Env):
    carol = await env.user("carol")
    room = await carol.open_management_room(env.bot)
    url = await start_link(carol, env.bot, room, command="link discord --profile Jobb")
    status, page = await authorise(env.discord, env.world.carol, url)
    # Carol is on the server the policy calls corporate: no MFA set up, no link.
    assert status == 400 and "multi-factor authentication" in page
    assert "corporate Discord server" in page and "Nothing was stored" in page
    account = await env.bridge.accounts.for_matrix_user(carol.mxid)
    assert not [p for profile in await env.bridge.storage.profiles.for_account(account.id)
                for p in await env.bridge.storage.personas.for_profile(profile.id)]


async def test_messages_both_ways_through_the_webhook(env: Env):
    discord, world, alice = env.discord, env.world, env.alice
    portal = await env.portal("general")
    # Discord -> Matrix, with formatting and a mention.
    await discord.post(world.general, world.bob, f"**hello** from <@{world.carol.id}>",
                       mentions=[world.carol])
    hello = await alice.wait_for_event(
        portal, lambda e: e.type == EventType.ROOM_MESSAGE and "hello" in e.content.body,
        "bob's message")
    assert "<strong>hello</strong>" in hello.content.formatted_body
    assert "matrix.to" in hello.content.formatted_body
    assert hello.content["m.mentions"]["user_ids"]
    member = await alice.client.get_state_event(portal, EventType.ROOM_MEMBER, hello.sender)
    assert member.displayname.startswith("Bobby")

    # Matrix -> Discord: through the bridge's webhook, under alice's Discord name and picture.
    await alice.client.send_message(portal, html("hi <b>Bob</b>", "hi Bob"))
    await discord.wait_until(lambda: "hi **Bob**" in contents(discord, world.general),
                             "alice's message in Discord")
    sent = next(m for m in discord.messages(world.general) if m.content == "hi **Bob**")
    assert sent.webhook_id and sent.author.username == "Alice Liddell"
    assert sent.author.avatar and world.alice.id in sent.author.avatar
    hook = discord.webhooks[sent.webhook_id]
    assert hook.creator.id == discord.app.bot.id and hook.channel_id == world.general.id
    # A pill of a Discord ghost becomes a real mention.
    await alice.client.send_message(portal, html(
        f'ping <a href="https://matrix.to/#/{hello.sender}">Bobby</a>', "ping Bobby"))
    await discord.wait_until(lambda: f"ping <@{world.bob.id}>"
                             in contents(discord, world.general), "the mention")
    # The webhook's own messages never came back into Matrix as someone else's.
    bodies = [e.content.body for e in await alice.room_events(portal)
              if e.type == EventType.ROOM_MESSAGE and e.sender != alice.mxid]
    assert "hi **Bob**" not in bodies and "hi Bob" not in bodies


async def test_a_servers_channels_share_a_sub_space_of_the_profiles_space(env: Env):
    discord, alice, client = env.discord, env.alice, env.alice.client
    # Two channels of one server (one of its own: other tests map the world's others).
    channel = discord.add_channel(env.world.guild, "offtopic")
    await discord.gateway.dispatch("CHANNEL_CREATE", channel.payload())
    await discord.wait_until(lambda: True, "")
    general, random = await env.portal("general"), await env.map("offtopic")
    account = await env.bridge.accounts.for_matrix_user(alice.mxid)
    profile = await env.bridge.storage.profiles.by_name(account.id, "Jobb")
    assert profile.space_mxid
    # As Synapse has it: each portal names one parent, the same space for both channels.
    parents = [{e.state_key for e in await client.get_state(portal)
                if e.type == EventType.SPACE_PARENT} for portal in (general, random)]
    assert parents[0] == parents[1] and len(parents[0]) == 1
    (server_space,) = parents[0]
    assert server_space != profile.space_mxid
    await client.join_room_by_id(server_space)  # alice was invited to it
    await client.join_room_by_id(profile.space_mxid)
    state = await client.get_state(server_space)
    created = next(e for e in state if e.type == EventType.ROOM_CREATE)
    assert created.content.type == RoomType.SPACE
    assert next(e for e in state if e.type == EventType.ROOM_NAME).content.name == "Acme"
    assert {e.state_key for e in state if e.type == EventType.SPACE_CHILD} >= {general, random}
    # ... and it is itself a child of the profile's space, which it names as its parent.
    assert [e.state_key for e in state if e.type == EventType.SPACE_PARENT] == [
        profile.space_mxid]
    children = {e.state_key for e in await client.get_state(profile.space_mxid)
                if e.type == EventType.SPACE_CHILD and e.content.get("via")}
    assert server_space in children and general not in children


async def test_replies_edits_deletes_and_reactions_both_ways(env: Env):
    discord, world, alice = env.discord, env.world, env.alice
    portal = await env.portal("general")
    general = world.general

    # Discord -> Matrix.
    bobs = await discord.post(general, world.bob, "frist")
    first = await alice.wait_for_event(portal, body_is("frist"), "bob's message", after=None)
    await discord.edit(bobs, "first")
    edit = await alice.wait_for_event(portal, lambda e: e.type == EventType.ROOM_MESSAGE
                                      and e.content.get_edit() == first.event_id, "the edit",
                                      after=None)
    assert edit.content.body == "first"
    await discord.react(world.bob, bobs, "👍")
    reaction = await alice.wait_for_event(
        portal, lambda e: e.type == EventType.REACTION
        and e.content.relates_to.event_id == first.event_id, "bob's reaction", after=None)
    assert reaction.content.relates_to.key == "👍"
    await discord.post(general, world.carol, "agreed", reply_to=bobs)
    reply = await alice.wait_for_event(portal, body_is("agreed"), "carol's reply", after=None)
    assert reply.content.get_reply_to() == first.event_id
    await discord.delete(bobs)
    await alice.wait_for_event(portal, lambda e: e.type == EventType.ROOM_REDACTION
                               and e.redacts == first.event_id, "the deletion", after=None)

    # Matrix -> Discord.
    mine = await alice.send_text(portal, "draft")
    await discord.wait_until(lambda: "draft" in contents(discord, general), "alice's draft")
    sent = next(m for m in discord.messages(general) if m.content == "draft")
    await alice.send_text(portal, "final", edit_of=mine)
    await discord.wait_until(lambda: sent.content == "final", "the edit")
    await alice.client.react(portal, mine, "🎉")
    await discord.wait_until(lambda: discord.app.bot.id in sent.reactions.get("🎉", []),
                             "the bot's reaction for alice")
    reply_event = await alice.send_text(portal, "answer", reply_to=reply.event_id)
    await discord.wait_until(lambda: any(m.content.endswith("answer")
                                         for m in discord.messages(general)), "the reply")
    answer = next(m for m in discord.messages(general) if m.content.endswith("answer"))
    replied = next(m for m in discord.messages(general) if m.content == "agreed")
    assert f"/{general.id}/{replied.id}" in answer.content.split("\n")[0]
    await alice.client.redact(portal, mine)
    await discord.wait_until(lambda: sent.deleted, "the deletion")
    # None of what the bridge did came back as a new message or a second reaction.
    events = await alice.room_events(portal)
    assert not [e for e in events if e.type == EventType.REACTION and e.sender != alice.mxid
                and e.content.relates_to.key == "🎉"]
    assert reply_event


def in_thread_of(root: str, text: str):
    return lambda e: (e.type == EventType.ROOM_MESSAGE and e.content.body == text
                      and e.content.get_thread_parent() == root)


async def test_threads_and_forum_posts_as_matrix_threads(env: Env):
    discord, world, alice = env.discord, env.world, env.alice
    # A thread that existed before the channel was mapped, on a message Matrix never saw.
    old_root = await discord.post(world.random, world.bob, "plans for friday")
    old = await discord.open_thread(world.random, "friday", world.bob, from_message=old_root)
    await discord.post(old, world.carol, "before mapping")
    portal = await env.map("random")
    # A thread on a message that did come over.
    root_msg = await discord.post(world.random, world.bob, "new topic")
    root = await alice.wait_for_event(portal, body_is("new topic"), "the root", after=None)
    thread = await discord.open_thread(world.random, "topic", world.bob, from_message=root_msg)
    await discord.post(thread, world.carol, "in the thread")
    await alice.wait_for_event(portal, in_thread_of(root.event_id, "in the thread"),
                               "the thread reply", after=None)
    # The old thread: its root is fetched when the thread is first seen.
    await discord.post(old, world.bob, "after mapping")
    old_event = await alice.wait_for_event(portal, body_is("plans for friday"),
                                           "the old thread's root", after=None)
    await alice.wait_for_event(portal, in_thread_of(old_event.event_id, "after mapping"),
                               "the old thread's new message", after=None)
    # Matrix -> Discord into the existing thread, and a new thread on a Discord message.
    content = TextMessageEventContent(msgtype=MessageType.TEXT, body="from matrix")
    content.set_thread_parent(root.event_id)
    await alice.client.send_message(portal, content)
    await discord.wait_until(lambda: "from matrix" in contents(discord, thread),
                             "alice's thread reply in the Discord thread")
    plain = await discord.post(world.random, world.carol, "no thread yet")
    plain_event = await alice.wait_for_event(portal, body_is("no thread yet"), "carol's",
                                             after=None)
    content = TextMessageEventContent(msgtype=MessageType.TEXT, body="starting one")
    content.set_thread_parent(plain_event.event_id)
    await alice.client.send_message(portal, content)
    await discord.wait_until(lambda: any(
        c.id == plain.id and c.is_thread and "starting one" in contents(discord, c)
        for c in world.guild.channels), "a new Discord thread on carol's message")

    # Forum posts: each post a Matrix thread in the forum's room, its title in the root;
    # one posted before the forum was mapped comes in with its first reply.
    early, _ = await discord.forum_post(world.forum, world.bob, "Old question", "how?",
                                        dispatch=False)
    forum = await env.map("help")
    post, _ = await discord.forum_post(world.forum, world.carol, "Printer on fire", "help!")
    first = await alice.wait_for_event(
        forum, lambda e: e.type == EventType.ROOM_MESSAGE
        and "Printer on fire" in e.content.body and "help!" in e.content.body,
        "the forum post", after=None)
    await discord.post(post, world.bob, "water?")
    await alice.wait_for_event(forum, in_thread_of(first.event_id, "water?"), "the answer",
                               after=None)
    await discord.post(early, world.carol, "like this")
    early_root = await alice.wait_for_event(
        forum, lambda e: e.type == EventType.ROOM_MESSAGE and "Old question" in e.content.body,
        "the older post", after=None)
    await alice.wait_for_event(forum, in_thread_of(early_root.event_id, "like this"),
                               "its reply", after=None)
    content = TextMessageEventContent(msgtype=MessageType.TEXT, body="use sand")
    content.set_thread_parent(first.event_id)
    await alice.client.send_message(forum, content)
    await discord.wait_until(lambda: "use sand" in contents(discord, post),
                             "alice's answer in the forum post")


async def test_attachments_both_ways_within_discords_limit(env: Env):
    discord, world, alice = env.discord, env.world, env.alice
    portal = await env.portal("general")
    await discord.post(world.general, world.bob, "", attachments=[
        Attachment(snowflake(), "notes.txt", "text/plain", b"remember the milk")])
    shared = await alice.wait_for_event(portal, body_is("notes.txt"), "bob's file",
                                        after=None)
    assert await alice.client.download_media(shared.content.url) == b"remember the milk"
    await discord.post(world.general, world.bob, "see this", embeds=[
        {"type": "rich", "title": "Release 2.0", "description": "Now with threads"}])
    embedded = await alice.wait_for_event(
        portal, lambda e: e.type == EventType.ROOM_MESSAGE  # (a redacted one has no body)
        and str(e.content.serialize().get("body", "")).startswith("see this"),
        "the embed's text", after=None)
    assert embedded.content.body == "see this\nRelease 2.0\nNow with threads"
    sticker = snowflake()
    discord.stickers[sticker] = b"\x89PNG wave"
    await discord.post(world.general, world.bob, "", sticker={
        "id": sticker, "name": "wave", "format_type": 1})
    waved = await alice.wait_for_event(portal, body_is("wave.png"), "bob's sticker",
                                       after=None)
    assert waved.content.msgtype == MessageType.IMAGE
    assert await alice.client.download_media(waved.content.url) == b"\x89PNG wave"
    mxc = await alice.client.upload_media(b"a picture", mime_type="image/png",
                                          filename="pic.png")
    await alice.client.send_message(portal, MediaMessageEventContent(
        msgtype=MessageType.IMAGE, body="pic.png", url=mxc))
    long = await alice.send_text(portal, "x" * 2001)
    await alice.wait_for_event(
        portal, lambda e: e.type == EventType.ROOM_MESSAGE and e.sender == env.bot
        and "Not delivered" in e.content.body, "the notice about the long message",
        after=long)
    assert not any(m.content.startswith("xxxx") for m in discord.messages(world.general))
    await discord.wait_until(lambda: any(f.filename == "pic.png" and f.data == b"a picture"
                                         for m in discord.messages(world.general)
                                         for f in m.attachments), "alice's picture")
    big = await alice.client.upload_media(b"x" * (10 * 1024 * 1024 + 1),
                                          mime_type="application/octet-stream",
                                          filename="big.bin")
    event = await alice.client.send_message(portal, MediaMessageEventContent(
        msgtype=MessageType.FILE, body="big.bin", url=big))
    await alice.wait_for_event(
        portal, lambda e: e.type == EventType.ROOM_MESSAGE and e.sender == env.bot
        and "Not delivered" in e.content.body, "the notice about the big file", after=event)
    told = await alice.wait_for_notice(env.room, env.bot, "big.bin is", after=None)
    assert "more than Discord takes (10485760 bytes)" in told
    assert not any(f.filename == "big.bin" for m in discord.messages(world.general)
                   for f in m.attachments)


async def test_relay_mode_carries_people_without_a_discord_account(env: Env):
    discord, world, alice = env.discord, env.world, env.alice
    # A rule with --relay on a channel of its own; dave has no Discord account.
    channel = discord.add_channel(world.guild, "lobby")
    await discord.gateway.dispatch("CHANNEL_CREATE", channel.payload())
    await discord.wait_until(lambda: True, "")
    portal = await env.map("lobby", "--relay")
    dave = await env.user("dave")
    await alice.client.invite_user(portal, dave.mxid)
    await dave.client.join_room_by_id(portal)
    await dave.client.set_displayname("Dave")
    picture = await dave.client.upload_media(PNG, mime_type="image/png")
    await dave.client.set_avatar_url(picture)
    await dave.send_text(portal, "hello from matrix")
    await discord.wait_until(lambda: any(m.content.endswith("hello from matrix")
                                         for m in discord.messages(channel)), "dave's message")
    relayed = next(m for m in discord.messages(channel)
                   if m.content.endswith("hello from matrix"))
    # Under dave's Matrix name, marked as from Matrix: nobody passes for a linked person.
    assert relayed.content == "Dave: hello from matrix"
    assert relayed.author.username == "Dave (Matrix)"
    assert relayed.webhook_id
    # With dave's Matrix picture, as the homeserver's download URL Discord can fetch.
    server, media_id = picture.removeprefix("mxc://").split("/")
    homeserver = env.bridge.config["homeserver.public_url"].rstrip("/")
    assert relayed.author.avatar == (f"{homeserver}/_matrix/media/v3/download/"
                                     f"{server}/{media_id}")


async def test_typing_names_bulk_deletes_and_custom_emoji(env: Env):
    discord, world, alice = env.discord, env.world, env.alice
    portal = await env.portal("general")
    bobs = [await discord.post(world.general, world.bob, f"bulk {i}") for i in range(3)]
    events = [await alice.wait_for_event(portal, body_is(f"bulk {i}"), f"bulk {i}",
                                         after=None) for i in range(3)]
    # Typing on Discord shows in Matrix as the ghost typing.
    bob_ghost = events[0].sender
    since = (await alice.client.sync(timeout=0))["next_batch"]
    await discord.typing_in(world.general, world.bob)
    typing: list[str] = []
    while bob_ghost not in typing:
        sync = await alice.client.sync(since=since, timeout=10_000)
        since = sync["next_batch"]
        for ephemeral in sync.get("rooms", {}).get("join", {}).get(portal, {}).get(
                "ephemeral", {}).get("events", []):
            if ephemeral["type"] == "m.typing":
                typing = ephemeral["content"]["user_ids"]
    # A custom emoji reaction arrives as its name.
    await discord.react(world.bob, bobs[0], "party:777")
    reaction = await alice.wait_for_event(
        portal, lambda e: e.type == EventType.REACTION
        and e.content.relates_to.event_id == events[0].event_id, "the custom emoji",
        after=None)
    assert reaction.content.relates_to.key == ":party:"
    # A moderator's bulk delete redacts every one of them in Matrix.
    await discord.bulk_delete(world.general, bobs[1:])
    for event in events[1:]:
        await alice.wait_for_event(portal, lambda e, eid=event.event_id: e.type
                                   == EventType.ROOM_REDACTION and e.redacts == eid,
                                   "the bulk deletion", after=None)
    # A nickname on the server becomes the ghost's name.
    await discord.set_nick(world.guild, world.bob, "Bob the Builder")
    for _ in range(200):
        member = await alice.client.get_state_event(portal, EventType.ROOM_MEMBER, bob_ghost)
        if member.displayname.startswith("Bob the Builder"):
            break
        await discord.wait_until(lambda: True, "")
    assert member.displayname.startswith("Bob the Builder")
    # Matrix typing shows as the bot typing in the channel.
    before = discord.typing.count(world.general.id)
    await alice.client.set_typing(portal, timeout=5000)
    await discord.wait_until(lambda: discord.typing.count(world.general.id) > before,
                             "typing in Discord")


async def test_revoking_an_account_revokes_the_grant_at_discord(env: Env):
    discord, world = env.discord, env.world
    dana = await env.user("dana")
    room = await link_discord(dana, env.bot, discord, world.bob)
    grant = next(g for g in discord.grants if g.user.id == world.bob.id and not g.revoked)
    await dana.send_text(room, f"revoke discord:{world.bob.id}")
    await discord.wait_until(lambda: grant.revoked, "the grant revoked at Discord")
    assert discord.calls("/oauth2/token/revoke")[-1].ok


async def test_round_trip_matrix_discord_matrix(env: Env, db_kind: str):
    """Measures (and reports) Matrix -> Discord -> Matrix round trips; asserts only that every
    round trip completes, in order."""
    import statistics
    import time

    discord, world, alice = env.discord, env.world, env.alice
    portal = await env.portal("general")
    since = (await alice.client.sync(timeout=0))["next_batch"]
    rounds = []
    for i in range(20):
        started = time.perf_counter()
        await alice.send_text(portal, f"ping {i}")
        await discord.wait_until(lambda i=i: f"ping {i}" in contents(discord, world.general),
                                 "the ping in Discord")
        await discord.post(world.general, world.bob, f"pong {i}")
        while True:
            sync = await alice.client.sync(since=since, timeout=10_000)
            since = sync["next_batch"]
            timeline = sync.get("rooms", {}).get("join", {}).get(portal, {}).get(
                "timeline", {}).get("events", [])
            if any(e.get("content", {}).get("body") == f"pong {i}" for e in timeline):
                break
        rounds.append(time.perf_counter() - started)
    median = statistics.median(rounds) * 1000
    print(f"\nMatrix -> Discord -> Matrix round trip ({db_kind}): median {median:.0f} ms over "
          f"{len(rounds)} rounds")
    assert len(rounds) == 20


async def test_a_pattern_rule_maps_new_channels_of_a_server(env: Env):
    discord, world, alice = env.discord, env.world, env.alice
    side = discord.add_guild("Side", world.bob, [world.alice])
    await discord.gateway.dispatch("GUILD_CREATE", side.payload())
    await alice.send_text(env.room, f"map discord {side.id}/* --profile Jobb")
    await alice.wait_for_notice(env.room, env.bot, "will be mapped")
    news = discord.add_channel(side, "news")
    await discord.gateway.dispatch("CHANNEL_CREATE", news.payload())
    portal = await alice.wait_for_invite()
    await discord.post(news, world.bob, "fresh off the press")
    await alice.wait_for_event(portal, body_is("fresh off the press"), "the new channel's "
                               "first message", after=None)
