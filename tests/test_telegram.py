"""Telegram end to end: the unmodified Telethon inside the bridge talks MTProto 2.0 to the
wire-level fake (tests/fakes/telegram); Matrix is the real Synapse. Linking by QR code and by
phone code + cloud password, and messages both ways as the person."""

from __future__ import annotations

import logging

import pytest
from mautrix.types import EventType, Format, MessageType, TextMessageEventContent
from telethon import TelegramClient
from telethon.tl import types

from tests.fakes.telegram import TelegramThread

from .support.telegram import link_by_qr, qr_token, telegram_settings


@pytest.fixture(scope="module")
def server():
    thread = TelegramThread()
    thread.start()
    # Telethon keeps the data centres' addresses (help.getConfig) for the whole process:
    # this module's fake has addresses of its own.
    TelegramClient._config = None
    yield thread
    thread.stop()


@pytest.fixture
def fake(server):
    return server.fake


@pytest.fixture
async def telegram_bridge(start_bridge, server, tmp_path):
    return await start_bridge(extra={"networks": {"telegram": telegram_settings(
        server, tmp_path / "telegram.pub")}})


def body_is(text: str):
    return lambda e: e.type == EventType.ROOM_MESSAGE and e.content.body == text


async def test_phone_code_and_cloud_password(telegram_bridge, server, fake, new_user,
                                             homeserver, caplog):
    caplog.set_level(logging.DEBUG)
    bridge = telegram_bridge
    mark = len(fake.calls)
    person = fake.add_person("Alice", password="tr0ub4dor")
    alice = await new_user("alice")
    bot = homeserver.bot_mxid
    room = await alice.open_management_room(bot)

    await alice.send_text(room, "link telegram +4700000000")
    assert "no account with the number" in await alice.wait_for_notice(room, bot, "Nothing")

    await alice.send_text(room, f"link telegram +{person.phone}")
    await alice.wait_for_notice(room, bot, "Send the code")
    wrong = await alice.send_text(room, "11111")
    await alice.wait_for_notice(room, bot, "not the one Telegram sent")
    code = fake.code_for(person)
    await alice.send_text(room, code)
    await alice.wait_for_notice(room, bot, "send its cloud password")
    bad = await alice.send_text(room, "not-the-password")
    await alice.wait_for_notice(room, bot, "refused that cloud password")
    right = await alice.send_text(room, "tr0ub4dor")
    consent = await alice.wait_for_notice(room, bot, "Reply yes to link")
    assert f"Telegram user {person.id}" in consent and "dialog(s)" in consent
    for secret in (wrong, bad, right):  # each secret reply was redacted at once
        assert not (await alice.client.get_event(room, secret)).content.serialize().get("body")
    # The SRP proofs were checked by the fake: the wrong one failed, the right one held.
    assert [c.error for c in fake.calls_of("auth.CheckPassword", mark)] == [
        "PASSWORD_HASH_INVALID", None]
    # Nothing is stored before consent but the sealed pending credential.
    account = await bridge.accounts.for_matrix_user(alice.mxid)
    assert (await bridge.accounts.view(account.id)).profiles[0].personas == []
    await alice.send_text(room, "yes")
    await alice.wait_for_notice(room, bot, f"Linked telegram:{person.id}")
    [persona] = (await bridge.accounts.view(account.id)).profiles[0].personas
    session = await bridge.security.vault.open_text(*persona.vault_ref, "session")
    assert session
    # The session string (auth key) is nowhere in the database in plaintext, nor in the log.
    for table in ("vault_secret", "persona", "one_time_secret", "audit_log"):
        rows = await bridge.storage.db.fetch(f"SELECT * FROM {table}")
        assert all(session not in str(value) for row in rows for value in tuple(row)), table
    bridge_log = "\n".join(r.getMessage() for r in caplog.records if r.name != "mau.http")
    for secret in (session, "tr0ub4dor", code):
        assert secret not in bridge_log

    # An expired code is a clear message and stores nothing.
    await alice.send_text(room, f"link telegram +{person.phone}")
    await alice.wait_for_notice(room, bot, "Send the code")
    await server.call(fake.expire_codes)
    await alice.send_text(room, fake.code_for(person))
    assert "expired" in await alice.wait_for_notice(room, bot, "Nothing was stored")
    # So is a number Telegram refuses.
    banned = fake.add_person("Mallory")
    banned.banned = True
    await alice.send_text(room, f"link telegram +{banned.phone}")
    assert "PHONE_NUMBER_BANNED" in await alice.wait_for_notice(room, bot, "Nothing was stored")
    # So is a flood wait.
    await server.call(fake.flood, "auth.SendCode", 300)
    await alice.send_text(room, f"link telegram +{person.phone}")
    assert "wait 5 min 0 s" in await alice.wait_for_notice(room, bot, "Nothing was stored")


async def test_qr_login_and_private_chat_both_ways(telegram_bridge, server, fake, new_user,
                                                   homeserver):
    mark = len(fake.calls)
    person = fake.add_person("Alice", username=None)
    bob = fake.add_person("Bob", username="bob")
    alice = await new_user("alice")
    bot = homeserver.bot_mxid
    room = await alice.open_management_room(bot)

    # An expired QR code is replaced by a new one; one not scanned yet is said so.
    fake.qr_seconds = 1
    await alice.send_text(room, "link telegram")
    first = qr_token(await alice.wait_for_notice(room, bot, "Scan this QR code"))
    # The QR code is an image too (its tg://login link in the body).
    first_image = await alice.wait_for_event(room, _qr_image(bot), "the QR image")
    assert qr_token(first_image.content.body) == first
    assert (await alice.client.download_media(first_image.content.url)).startswith(b"\x89PNG")
    fake.qr_seconds = 30
    await alice.send_text(room, "done")
    prompt = await alice.wait_for_notice(room, bot, "The QR code expired; scan this new one")
    assert qr_token(prompt) != first
    # The new code replaces the old image, which is redacted.
    second_image = await alice.wait_for_event(room, _qr_image(bot), "the new QR image")
    assert qr_token(second_image.content.body) == qr_token(prompt)
    assert not (await alice.client.get_event(room, first_image.event_id)
                ).content.serialize().get("url")
    await alice.send_text(room, "done")
    await alice.wait_for_notice(room, bot, "not scanned yet")
    # Consent refused: the session the scan created is logged out at Telegram too.
    await server.run(fake.accept_qr(qr_token(prompt), person))
    await alice.send_text(room, "done")
    await alice.wait_for_notice(room, bot, "Reply yes to link")
    await alice.send_text(room, "no")
    await alice.wait_for_notice(room, bot, "did not agree")
    [logout] = await _wait(server, lambda: fake.calls_of("auth.LogOut", mark), "auth.logOut")
    assert logout.user_id == person.id and logout.error is None
    assert person.id not in fake.authorized.values()
    done = await link_by_qr(alice, bot, room, server, person)
    assert "signed in as Alice" in done

    # Telegram -> Matrix: a private chat gets its room on the first message.
    bob.photo_id = fake.upload(b"bob's face", "image/jpeg", "bob.jpg").id
    await server.run(fake.send_as(bob, person, "hello alice", entities=[
        types.MessageEntityBold(0, 5), types.MessageEntitySpoiler(6, 5)]))
    portal = await alice.wait_for_invite()
    hello = await alice.wait_for_event(portal, body_is("hello alice"), "bob's message")
    assert hello.content.formatted_body == (
        "<strong>hello</strong> <span data-mx-spoiler>alice</span>")
    member = await alice.client.get_state_event(portal, EventType.ROOM_MEMBER, hello.sender)
    assert member.displayname.startswith("Bob")
    # The ghost carries bob's profile photo.
    assert member.avatar_url
    assert await alice.client.download_media(member.avatar_url) == b"bob's face"

    # Matrix -> Telegram, as alice herself, with formatting.
    content = TextMessageEventContent(msgtype=MessageType.TEXT, body="hi bob",
                                      format=Format.HTML,
                                      formatted_body="<em>hi</em> <code>bob</code>")
    await alice.client.send_message(portal, content)
    got = await _wait(server, lambda: [m for m in bob.messages.values()
                                       if m.message == "hi bob"])
    [message] = got
    assert message.from_id == types.PeerUser(person.id)
    assert [type(e).__name__ for e in message.entities] == ["MessageEntityItalic",
                                                            "MessageEntityCode"]
    # What the bridge sent does not come back into Matrix.
    bodies = [e.content.body for e in await alice.room_events(portal)
              if e.type == EventType.ROOM_MESSAGE]
    assert bodies.count("hi bob") == 1

    # Mentions are pills both ways.
    await server.run(fake.send_as(bob, person, "ask Bob", entities=[
        types.MessageEntityMentionName(4, 3, user_id=bob.id)]))
    asked = await alice.wait_for_event(portal, body_is("ask Bob"), "the mention")
    bob_ghost = hello.sender
    assert f'href="https://matrix.to/#/{bob_ghost}"' in asked.content.formatted_body
    pill = TextMessageEventContent(msgtype=MessageType.TEXT, body="Bob: look",
                                   format=Format.HTML, formatted_body=(
                                       f'<a href="https://matrix.to/#/{bob_ghost}">Bob</a>: '
                                       "look"))
    await alice.client.send_message(portal, pill)
    [looked] = await _wait(server, lambda: [m for m in bob.messages.values()
                                            if m.message == "Bob: look"])
    [mention] = looked.entities
    assert isinstance(mention, types.MessageEntityMentionName)
    assert (mention.offset, mention.length, mention.user_id) == (0, 3, bob.id)

    # Typing and read markers both ways.
    await alice.client.set_typing(portal, timeout=5000)
    await _wait(server, lambda: fake.calls_of("messages.SetTyping", mark)
                and fake.calls_of("messages.SetTyping", mark)[-1].user_id == person.id,
                "alice typing")
    await server.run(fake.typing_as(bob, person))
    await _ephemeral(alice, portal, lambda e: e["type"] == "m.typing"
                     and bob_ghost in e["content"]["user_ids"], "bob typing")
    await alice.client.send_receipt(portal, asked.event_id)
    [read] = await _wait(server, lambda: [c for c in fake.calls_of("messages.ReadHistory",
                                                                  mark)
                                          if c.user_id == person.id], "alice's read marker")
    [asked_copy] = [i for i, m in person.messages.items() if m.message == "ask Bob"]
    assert read.request.max_id == asked_copy
    [looked_own] = [i for i, m in person.messages.items() if m.message == "Bob: look"]
    await server.run(fake.read_as(bob, person, looked.id))
    looked_event = await alice.wait_for_event(portal, body_is("Bob: look"), "her message",
                                              after=None)
    await _ephemeral(alice, portal, lambda e: e["type"] == "m.receipt"
                     and bob_ghost in str(e["content"].get(looked_event.event_id, {})),
                     "bob's read receipt")
    assert looked_own

    # Replies, edits, reactions and deletions, Telegram -> Matrix.
    ids = await server.run(fake.send_as(bob, person, "first version"))
    original = await alice.wait_for_event(portal, body_is("first version"), "bob's message")
    await server.run(fake.edit_as(bob, person, ids[bob.id], "second version"))
    edit = await alice.wait_for_event(portal, lambda e: e.type == EventType.ROOM_MESSAGE
                                      and e.content.get_edit() == original.event_id,
                                      "bob's edit", after=original.event_id)
    assert "second version" in edit.content.body
    await server.run(fake.send_as(bob, person, "agreed", reply_to=ids[bob.id]))
    answer = await alice.wait_for_event(portal, lambda e: e.type == EventType.ROOM_MESSAGE
                                        and e.content.get_reply_to() == original.event_id,
                                        "bob's reply", after=original.event_id)
    assert "agreed" in answer.content.body
    await server.run(fake.react_as(bob, person, ids[bob.id], "👍"))
    await alice.wait_for_event(portal, lambda e: e.type == EventType.REACTION
                               and e.content.relates_to.event_id == original.event_id
                               and e.content.relates_to.key == "👍", "bob's reaction",
                               after=original.event_id)
    await server.run(fake.delete_as(bob, person, ids[bob.id]))
    await alice.wait_for_event(portal, lambda e: e.type == EventType.ROOM_REDACTION
                               and e.redacts == original.event_id, "the deletion",
                               after=original.event_id)

    # Matrix -> Telegram.
    mine = await alice.send_text(portal, "from matrix")
    [sent] = await _wait(server, lambda: [m for m in bob.messages.values()
                                          if m.message == "from matrix"])
    await alice.send_text(portal, "from matrix, edited", edit_of=mine)
    await _wait(server, lambda: sent.message == "from matrix, edited", "the edit")
    await alice.send_text(portal, "replying", reply_to=mine)
    [reply] = await _wait(server, lambda: [m for m in bob.messages.values()
                                           if m.message == "replying"])
    assert reply.reply_to.reply_to_msg_id == sent.id  # bob's own id of the message
    await alice.client.react(portal, mine, "🎉")
    await _wait(server, lambda: [c for c in fake.calls_of("messages.SendReaction")
                                 if c.user_id == person.id and c.request.reaction
                                 and c.error is None], "the reaction")
    await alice.client.redact(portal, mine)
    await _wait(server, lambda: sent.id not in bob.messages, "the deletion")

    # Files both ways.
    photo = fake.upload(b"\x89PNG fake picture", "image/png", "cat.png")
    await server.run(fake.send_as(bob, person, "", media=fake.document_media(photo)))
    picture = await alice.wait_for_event(portal, lambda e: e.type == EventType.ROOM_MESSAGE
                                         and getattr(e.content, "url", None), "bob's file")
    assert picture.content.body == "cat.png"
    assert await alice.client.download_media(picture.content.url) == b"\x89PNG fake picture"
    files_before = set(fake.files)
    upload = await alice.client.upload_media(b"notes", mime_type="text/plain",
                                             filename="notes.txt")
    await alice.client.send_file(portal, upload, file_name="notes.txt",
                                 file_type=MessageType.FILE)
    [document] = await _wait(server, lambda: [f for i, f in fake.files.items()
                                              if f.name == "notes.txt"
                                              and i not in files_before])
    assert document.data == b"notes"

    # A dropped connection: what bob says meanwhile arrives once, in order (getDifference).
    await server.call(fake.drop_connections, person.id)
    for text in ("while away 1", "while away 2"):
        await server.run(fake.send_as(bob, person, text))
    await alice.wait_for_event(portal, body_is("while away 2"), "the catch-up")
    bodies = [e.content.body for e in await alice.room_events(portal)
              if e.type == EventType.ROOM_MESSAGE and isinstance(e.content.body, str)]
    assert [b for b in bodies if b.startswith("while away")] == ["while away 1",
                                                                 "while away 2"]


def _qr_image(bot: str):
    return lambda e: (e.type == EventType.ROOM_MESSAGE and e.sender == bot
                      and getattr(e.content, "msgtype", None) == MessageType.IMAGE
                      and "tg://login" in (e.content.body or ""))


async def _ephemeral(user, room: str, matches, what: str) -> dict:
    """An ephemeral event (typing, receipts) of `room` in the user's /sync that `matches`."""
    since = None
    for _ in range(60):
        response = await user.client.sync(since=since, timeout=1000)
        since = response.get("next_batch")
        joined = response.get("rooms", {}).get("join", {}).get(room, {})
        for event in joined.get("ephemeral", {}).get("events", []):
            if matches(event):
                return event
    raise AssertionError(f"{user.mxid} never saw {what}")


async def _wait(server, found, what: str = "it"):
    import asyncio

    for _ in range(300):
        value = await server.call(found)
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"the fake never saw {what}")


async def test_forum_topics_as_threads_and_flood_waits(telegram_bridge, server, fake,
                                                      new_user, homeserver):
    person = fake.add_person("Alice")
    bob = fake.add_person("Bob")
    forum = fake.add_group("Makers", [person, bob], forum=True, username=f"makers{bob.id}",
                           reactions=["👍"])
    news = fake.add_group("News", [person, bob], broadcast=True, admins=[bob],
                          username=f"news{bob.id}")
    alice = await new_user("alice")
    bot = homeserver.bot_mxid
    room = await alice.open_management_room(bot)
    await link_by_qr(alice, bot, room, server, person)
    topic = await server.run(fake.create_topic(bob, forum, "Printing"))
    await alice.send_text(room, f"map telegram @makers{bob.id}")
    await alice.wait_for_notice(room, bot, "Mapped")
    portal = await alice.wait_for_invite()

    # General is the room's timeline; a topic is a thread whose root names it.
    await server.run(fake.send_as(bob, forum, "in general"))
    general = await alice.wait_for_event(portal, body_is("in general"), "general")
    assert general.content.relates_to is None or general.content.relates_to.rel_type is None
    await server.run(fake.send_as(bob, forum, "about printers", topic=topic))
    threaded = await alice.wait_for_event(portal, body_is("about printers"), "the topic")
    root = await alice.client.get_event(portal, threaded.content.relates_to.event_id)
    assert threaded.content.relates_to.rel_type.value == "m.thread"
    assert root.content.body == "Topic: Printing"

    # Matrix -> Telegram: a reply in the thread goes into the topic.
    content = TextMessageEventContent(msgtype=MessageType.TEXT, body="mine too")
    content.set_thread_parent(root.event_id, last_event_in_thread=threaded.event_id)
    await alice.client.send_message(portal, content)
    [sent] = await _wait(server, lambda: [m for m in forum.messages.values()
                                          if getattr(m, "message", None) == "mine too"])
    assert sent.reply_to.forum_topic
    assert topic in (sent.reply_to.reply_to_top_id, sent.reply_to.reply_to_msg_id)

    # A reaction the chat does not allow: the person is told.
    refused = await alice.client.react(portal, general.event_id, "🎉")
    await alice.wait_for_notice(portal, bot, "Not delivered", after=refused)

    # A FLOOD_WAIT storm: every message arrives, in order, none before Telegram allowed.
    await server.call(fake.flood, "messages.SendMessage", 1, 3)
    for i in range(4):
        await alice.send_text(portal, f"storm {i}")
    await _wait(server, lambda: [m.message for m in forum.messages.values()
                                 if (getattr(m, "message", None) or "").startswith("storm")]
                == [f"storm {i}" for i in range(4)], "the whole storm, in order")
    calls = [c for c in fake.calls_of("messages.SendMessage")
             if c.user_id == person.id and c.request.message.startswith("storm")]
    waits = [c for c in calls if c.error == "FLOOD_WAIT_1"]
    assert len(waits) == 3
    for refused_call in waits:
        later = [c for c in calls if c.at > refused_call.at]
        assert later and later[0].at - refused_call.at >= 1.0

    # A channel where only admins post: mapped read-only, sending is refused with a notice.
    await alice.send_text(room, f"map telegram @news{bob.id}")
    await alice.wait_for_notice(room, bot, "Mapped")
    channel = await alice.wait_for_invite()
    await server.run(fake.send_as(bob, news, "breaking"))
    await alice.wait_for_event(channel, body_is("breaking"), "the channel post")
    attempt = await alice.send_text(channel, "may I?")
    await alice.wait_for_notice(channel, bot, "Not delivered", after=attempt)


async def test_revoked_session_turns_read_only_and_relink_delivers(
        telegram_bridge, server, fake, new_user, homeserver):
    bridge = telegram_bridge
    person = fake.add_person("Alice")
    bob = fake.add_person("Bob")
    alice = await new_user("alice")
    bot = homeserver.bot_mxid
    room = await alice.open_management_room(bot)
    await link_by_qr(alice, bot, room, server, person)
    await server.run(fake.send_as(bob, person, "hi"))
    portal = await alice.wait_for_invite()
    await alice.wait_for_event(portal, body_is("hi"), "bob's hi")

    await server.call(fake.revoke, person.id)  # Settings > Devices > terminate
    mark = len(fake.calls)
    await alice.send_text(portal, "during 1")
    ref = f"telegram:{person.id}"
    prompt = await alice.wait_for_notice(room, bot, "read-only")
    assert f"relink {ref}" in prompt and "SESSION_REVOKED" in prompt
    await alice.send_text(portal, "during 2")
    account = await bridge.accounts.for_matrix_user(alice.mxid)
    persona = await bridge.accounts.find_persona(account.id, ref)
    assert persona.status.value != "active"
    refused = [c for c in fake.calls_of("messages.SendMessage", mark)
               if c.error == "SESSION_REVOKED"]
    assert len(refused) == 1  # read-only within one refused send

    await link_by_qr(alice, bot, room, server, person, command=f"relink {ref}")
    await _wait(server, lambda: [m.message for m in bob.messages.values()
                                 if m.message.startswith("during")] == ["during 1", "during 2"],
                "the queued messages, in order")
    persona = await bridge.accounts.find_persona(account.id, ref)
    assert persona.status.value == "active"


async def test_a_restart_while_messages_arrive(start_bridge, server, fake, new_user,
                                               homeserver, tmp_path):
    settings = {"networks": {"telegram": telegram_settings(server, tmp_path / "tg.pub")}}
    bridge = await start_bridge(extra=settings)
    person = fake.add_person("Alice")
    bob = fake.add_person("Bob")
    group = fake.add_group("Family", [person, bob])
    alice = await new_user("alice")
    bot = homeserver.bot_mxid
    room = await alice.open_management_room(bot)
    await link_by_qr(alice, bot, room, server, person)
    await alice.send_text(room, f"map telegram -{group.id}")
    await alice.wait_for_notice(room, bot, "Mapped")
    portal = await alice.wait_for_invite()
    await server.run(fake.send_as(bob, group, "before"))
    await alice.wait_for_event(portal, body_is("before"), "the first message")

    await bridge.stop()
    for i in range(3):
        await server.run(fake.send_as(bob, group, f"meanwhile {i}"))
    # Private chats are caught up too (getDifference from the recorded update state).
    for text in ("while down 1", "while down 2"):
        await server.run(fake.send_as(bob, person, text))
    # A flood wait at start-up is waited out, not a crash (mautrix-telegram#836).
    await server.call(fake.flood, "messages.GetDialogs", 30)
    await start_bridge(extra=settings)
    await server.run(fake.send_as(bob, group, "after"))
    await alice.wait_for_event(portal, body_is("after"), "the message after the restart")
    await alice.wait_for_event(portal, body_is("meanwhile 2"), "the caught-up messages")
    bodies = [e.content.body for e in await alice.room_events(portal)
              if e.type == EventType.ROOM_MESSAGE and e.sender != bot]
    assert [b for b in bodies if b in ("before", "after") or b.startswith("meanwhile")] == [
        "before", "meanwhile 0", "meanwhile 1", "meanwhile 2", "after"]
    private = await alice.wait_for_invite()
    await alice.wait_for_event(private, body_is("while down 2"), "the private catch-up",
                               after=None)
    bodies = [e.content.body for e in await alice.room_events(private)
              if e.type == EventType.ROOM_MESSAGE]
    assert [b for b in bodies if b.startswith("while down")] == ["while down 1",
                                                                 "while down 2"]
    await alice.send_text(portal, "still here")
    await _wait(server, lambda: [m for m in bob.messages.values()
                                 if m.message == "still here"], "a send after the restart")


async def test_own_api_id_and_unlink_logs_out(start_bridge, server, fake, new_user,
                                              homeserver, tmp_path):
    from tests.fakes.telegram import API_HASH, API_ID

    bridge = await start_bridge(extra={"networks": {"telegram": telegram_settings(
        server, tmp_path / "tg.pub", api_id=None, api_hash=None, require_own_api_id=True)}})
    person = fake.add_person("Alice")
    person.home_dc = fake.other_dc  # the QR login has to move to her data centre
    bob = fake.add_person("Bob")
    alice = await new_user("alice")
    bot = homeserver.bot_mxid
    room = await alice.open_management_room(bot)
    mark = len(fake.calls)
    await alice.send_text(room, "link telegram")
    await alice.wait_for_notice(room, bot, "Send your api_id and api_hash")
    secret = await alice.send_text(room, f"{API_ID} {API_HASH}")
    prompt = await alice.wait_for_notice(room, bot, "Scan this QR code")
    assert not (await alice.client.get_event(room, secret)).content.serialize().get("body")
    await link_by_qr(alice, bot, room, server, person, command=None, prompt=prompt)
    account = await bridge.accounts.for_matrix_user(alice.mxid)
    persona = await bridge.accounts.find_persona(account.id, f"telegram:{person.id}")
    assert await bridge.security.vault.open_text(*persona.vault_ref, "api_hash") == API_HASH
    assert [c.error for c in fake.calls_of("auth.ImportLoginToken", mark)] == [None]
    # The session lives in her data centre now, and works there.
    await server.run(fake.send_as(bob, person, "found you"))
    portal = await alice.wait_for_invite()
    await alice.wait_for_event(portal, body_is("found you"), "bob's message")
    assert {c.dc_id for c in fake.connections if fake.user_of(c) == person.id} == {
        fake.other_dc}

    await alice.send_text(room, f"unlink telegram:{person.id}")
    await alice.wait_for_notice(room, bot, "credentials were destroyed")
    [logout] = await _wait(server, lambda: fake.calls_of("auth.LogOut", mark), "auth.logOut")
    assert logout.user_id == person.id and logout.error is None
    # The session is gone at Telegram too, not only in the vault.
    assert person.id not in fake.authorized.values()
