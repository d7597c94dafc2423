"""XMPP end to end: a real Prosody (TLS, SRV through dnsmasq) and a real Synapse."""

from __future__ import annotations

import asyncio
import logging

from mautrix.types import EventType

from .support.matrix import DEADLINE
from .support.recording import RecordingServer

MUC = "conference.rf.test"


async def link_xmpp(alice, peer, homeserver, profile: str = "Jobb") -> str:
    """Link an XMPP account through the bot; returns the management room."""
    room = await alice.open_management_room(homeserver.bot_mxid)
    await alice.send_text(room, f"link xmpp {peer.jid} --profile {profile}")
    await alice.wait_for_notice(room, homeserver.bot_mxid, "Send it as your next message")
    await alice.send_text(room, peer.password)
    await alice.wait_for_notice(room, homeserver.bot_mxid, "Reply yes to link")
    await alice.send_text(room, "yes")
    await alice.wait_for_notice(room, homeserver.bot_mxid, f"Linked xmpp:{peer.jid}")
    return room


async def test_linking_through_the_bot(xmpp_bridge, new_user, xmpp_peer, homeserver, caplog,
                                       prosody):
    caplog.set_level(logging.DEBUG)
    bridge = xmpp_bridge
    alice = await new_user("alice")
    account_peer = await xmpp_peer("alice")
    await account_peer.stop()  # only its credentials are needed
    room = await alice.open_management_room(homeserver.bot_mxid)
    bot = homeserver.bot_mxid

    await alice.send_text(room, f"link xmpp {account_peer.jid} --profile Jobb")
    await alice.wait_for_notice(room, bot, "Send it as your next message")
    wrong = await alice.send_text(room, "not-the-password")
    refused = await alice.wait_for_notice(room, bot, "refused the password")
    assert "Nothing was stored" in refused
    account = await bridge.accounts.for_matrix_user(alice.mxid)
    assert (await bridge.accounts.view(account.id)).profiles[0].personas == []
    assert await bridge.storage.db.fetchval(
        "SELECT COUNT(*) FROM vault_secret WHERE persona LIKE 'per_%'") == 0
    redacted = await alice.client.get_event(room, wrong)
    assert not redacted.content.serialize().get("body")  # the password was redacted

    await alice.send_text(room, f"link xmpp {account_peer.jid} --profile Jobb")
    await alice.wait_for_notice(room, bot, "Send it as your next message")
    await alice.send_text(room, account_peer.password)
    consent = await alice.wait_for_notice(room, bot, "Reply yes to link")
    # What was checked, not a fixed phrase: TLS 1.3 has no tls-unique, so no -PLUS here.
    assert ("signed in with SCRAM-SHA-1 over TLSv1.3 (certificate chain verified against the "
            "configured CA file for rf.test (issued by RelayForge test CA))") in consent
    assert "roster fetched" in consent
    assert "send, edit, delete and react there only when you do so in Matrix" in consent
    await alice.send_text(room, "no")
    await alice.wait_for_notice(room, bot, "Not linked: you did not agree")
    assert await bridge.storage.db.fetchval(
        "SELECT COUNT(*) FROM vault_secret WHERE persona NOT LIKE '\\_%' ESCAPE '\\'") == 0

    await alice.send_text(room, f"link xmpp {account_peer.jid} --profile Jobb")
    await alice.wait_for_notice(room, bot, "Send it as your next message")
    await alice.send_text(room, account_peer.password)
    await alice.wait_for_notice(room, bot, "Reply yes to link")
    await alice.send_text(room, "yes")
    done = await alice.wait_for_notice(room, bot, f"Linked xmpp:{account_peer.jid}")
    assert "roster fetched" in done
    view = await bridge.accounts.view(account.id)
    [persona] = view.profiles[0].personas
    assert (persona.platform, persona.status.value) == ("xmpp", "active")
    assert await bridge.security.vault.open_text(*persona.vault_ref, "password") == (
        account_peer.password)
    # The bridge's own log output (the test's Matrix client logs its requests as mau.http).
    bridge_log = "\n".join(r.getMessage() for r in caplog.records if r.name != "mau.http")
    assert account_peer.password not in bridge_log
    assert "not-the-password" not in bridge_log


async def test_muc_mapped_by_rule_flows_both_ways(xmpp_bridge, new_user, xmpp_peer,
                                                  homeserver):
    alice = await new_user("alice")
    alice_xmpp = await xmpp_peer("alice")
    bob = await xmpp_peer("bob")
    await alice_xmpp.stop()
    muc = f"team{bob.nick}@{MUC}"
    await bob.join(muc)
    room = await link_xmpp(alice, alice_xmpp, homeserver)
    await alice.send_text(room, f"map xmpp {muc} --profile Jobb")
    await alice.wait_for_notice(room, homeserver.bot_mxid, f"Mapped xmpp {muc} into Jobb")
    portal = await alice.wait_for_invite()

    bob.send(muc, "hello from xmpp")
    hello = await alice.wait_for_event(
        portal, lambda e: e.type == EventType.ROOM_MESSAGE
        and e.content.body == "hello from xmpp", "bob's message")
    member = await alice.client.get_state_event(portal, EventType.ROOM_MEMBER, hello.sender)
    assert member.displayname == f"{bob.nick} (XMPP)"

    await alice.send_text(portal, "hi bob")
    got = await bob.wait_for(lambda m: m["body"] == "hi bob", "alice's message")
    assert got["from"].resource == alice_xmpp.nick  # sent as alice herself
    # The room reflects alice's own message: it must not come back into Matrix.
    bodies = [e.content.body for e in await alice.room_events(portal)
              if e.type == EventType.ROOM_MESSAGE]
    assert bodies.count("hi bob") == 1



def correction(target: str):
    def change(msg):
        msg["replace"]["id"] = target
    return change


def reply_to(target: str, to: str):
    def change(msg):
        msg["reply"]["id"] = target
        msg["reply"]["to"] = to
    return change


def retraction(target: str):
    def change(msg):
        msg["retract"]["id"] = target
    return change


def reaction(target: str, key: str):
    def change(msg):
        msg["reactions"]["id"] = target
        msg["reactions"]["values"] = {key}
    return change


async def mapped_muc(alice, alice_xmpp, bob, homeserver) -> tuple[str, str]:
    muc = f"team{bob.nick}@{MUC}"
    await bob.join(muc)
    room = await link_xmpp(alice, alice_xmpp, homeserver)
    await alice.send_text(room, f"map xmpp {muc} --profile Jobb")
    await alice.wait_for_notice(room, homeserver.bot_mxid, f"Mapped xmpp {muc} into Jobb")
    return muc, await alice.wait_for_invite()


def body_is(text: str):
    return lambda e: e.type == EventType.ROOM_MESSAGE and e.content.body == text


async def test_edits_replies_reactions_and_retractions_both_ways(xmpp_bridge, new_user,
                                                                 xmpp_peer, homeserver):
    alice = await new_user("alice")
    alice_xmpp, bob = await xmpp_peer("alice"), await xmpp_peer("bob")
    await alice_xmpp.stop()
    muc, portal = await mapped_muc(alice, alice_xmpp, bob, homeserver)

    # XMPP -> Matrix
    first = bob.send(muc, "first version")
    original = await alice.wait_for_event(portal, body_is("first version"), "bob's message")
    bob.send(muc, "second version", edit=correction(first))
    edit = await alice.wait_for_event(
        portal, lambda e: e.type == EventType.ROOM_MESSAGE
        and e.content.get_edit() == original.event_id, "bob's correction")
    assert edit.content.body == "second version"
    bob.send(muc, "> first version\nagreed", reply=reply_to(first, f"{muc}/{bob.nick}"))
    answer = await alice.wait_for_event(
        portal, lambda e: e.type == EventType.ROOM_MESSAGE
        and e.content.get_reply_to() == original.event_id, "bob's reply")
    assert "agreed" in answer.content.body
    bob.send(muc, "", react=reaction(first, "👍"))
    await alice.wait_for_event(
        portal, lambda e: e.type == EventType.REACTION
        and e.content.relates_to.event_id == original.event_id
        and e.content.relates_to.key == "👍", "bob's reaction")
    bob.send(muc, "retracted", retract=retraction(first))
    await alice.wait_for_event(
        portal, lambda e: e.type == EventType.ROOM_REDACTION
        and e.redacts == original.event_id, "the retraction")

    # Matrix -> XMPP
    mine = await alice.send_text(portal, "from matrix")
    sent = await bob.wait_for(lambda m: m["body"] == "from matrix", "alice's message")
    await alice.send_text(portal, "from matrix, edited", edit_of=mine)
    fixed = await bob.wait_for(lambda m: m["body"] == "from matrix, edited", "the edit")
    assert fixed["replace"]["id"] == sent["id"]
    await alice.send_text(portal, "replying", reply_to=mine)
    replied = await bob.wait_for(lambda m: m["body"] == "replying", "the reply")
    # In a MUC, replies, reactions and retractions name the room's stanza-id (XEP-0359).
    room_ref = next(e.get("id") for e in sent.xml.findall("{urn:xmpp:sid:0}stanza-id")
                    if e.get("by") == muc)
    assert replied["reply"]["id"] == room_ref
    await alice.client.react(portal, mine, "🎉")
    reacted = await bob.wait_for(lambda m: m.get_plugin("reactions", check=True)
                                 and "🎉" in m["reactions"]["values"], "the reaction")
    assert reacted["reactions"]["id"] == room_ref
    await alice.client.redact(portal, mine)
    gone = await bob.wait_for(lambda m: m.get_plugin("retract", check=True)
                              and m["retract"]["id"] == room_ref, "the retraction")
    assert gone["from"].resource == alice_xmpp.nick


async def test_direct_chat_both_ways(xmpp_bridge, new_user, xmpp_peer, homeserver):
    alice = await new_user("alice")
    alice_xmpp, bob = await xmpp_peer("alice"), await xmpp_peer("bob")
    await alice_xmpp.stop()
    await link_xmpp(alice, alice_xmpp, homeserver)
    bob.send(alice_xmpp.jid, "hi alice, directly", kind="chat")
    portal = await alice.wait_for_invite()
    hello = await alice.wait_for_event(portal, body_is("hi alice, directly"), "bob's chat")
    member = await alice.client.get_state_event(portal, EventType.ROOM_MEMBER, hello.sender)
    assert member.displayname == f"{bob.nick} (XMPP)"
    await alice.send_text(portal, "hi bob, directly")
    got = await bob.wait_for(lambda m: m["body"] == "hi bob, directly", "alice's chat")
    assert (got["type"], got["from"].bare) == ("chat", alice_xmpp.jid)


async def test_portal_member_without_a_persona_is_told_how_to_link(xmpp_bridge, new_user,
                                                                   xmpp_peer, homeserver):
    alice, carol = await new_user("alice"), await new_user("carol")
    alice_xmpp, bob = await xmpp_peer("alice"), await xmpp_peer("bob")
    await alice_xmpp.stop()
    muc, portal = await mapped_muc(alice, alice_xmpp, bob, homeserver)
    await xmpp_bridge.bot.intent.invite_user(portal, carol.mxid)
    await carol.client.join_room_by_id(portal)
    await carol.send_text(portal, "can anyone hear me?")
    notice = await carol.wait_for_notice(portal, homeserver.bot_mxid, "no xmpp account")
    assert "link xmpp ADDRESS" in notice
    bob.send(muc, "marker")
    await bob.wait_for(lambda m: m["body"] == "marker", "its own marker")
    assert not [m for m in bob.messages if m["body"] == "can anyone hear me?"]


async def test_restarts_lose_nothing_and_duplicate_nothing(start_bridge, prosody, new_user,
                                                           xmpp_peer, homeserver):
    settings = {"networks": {"xmpp": {"enabled": True, "ca_file": str(prosody.ca),
                                      "nameserver": prosody.nameserver}}}
    bridge = await start_bridge(extra=settings)
    alice = await new_user("alice")
    alice_xmpp, bob = await xmpp_peer("alice"), await xmpp_peer("bob")
    await alice_xmpp.stop()
    muc, portal = await mapped_muc(alice, alice_xmpp, bob, homeserver)
    bob.send(muc, "before")
    await alice.wait_for_event(portal, body_is("before"), "the first message")

    # The bridge goes away; both sides keep talking.
    await bridge.stop()
    for i in range(3):
        bob.send(muc, f"xmpp while the bridge is down {i}")
    await alice.send_text(portal, "matrix while the bridge is down")
    await start_bridge(extra=settings)
    for i in range(3):
        await alice.wait_for_event(portal, body_is(f"xmpp while the bridge is down {i}"),
                                   f"message {i} sent while the bridge was down")
    await bob.wait_for(lambda m: m["body"] == "matrix while the bridge is down",
                       "the Matrix message sent while the bridge was down")

    # Now the XMPP server restarts mid-conversation.
    prosody.restart()
    await bob.reconnect()
    await bob.join(muc)
    await alice.send_text(portal, "matrix after the server restart")
    await bob.wait_for(lambda m: m["body"] == "matrix after the server restart",
                       "the Matrix message after the restart")
    bob.send(muc, "xmpp after the server restart")
    await alice.wait_for_event(portal, body_is("xmpp after the server restart"),
                               "the XMPP message after the restart")

    # Every message exactly once on each side.
    bodies = [e.content.body for e in await alice.room_events(portal)
              if e.type == EventType.ROOM_MESSAGE]
    for text in ["before", *(f"xmpp while the bridge is down {i}" for i in range(3)),
                 "matrix while the bridge is down", "matrix after the server restart",
                 "xmpp after the server restart"]:
        assert bodies.count(text) == 1, (text, bodies)
    at_bob = [m["body"] for m in bob.messages if m["type"] == "groupchat"]
    for text in ("matrix while the bridge is down", "matrix after the server restart"):
        assert at_bob.count(text) == 1, (text, at_bob)


async def test_linking_and_rules_through_the_provisioning_api(start_bridge, prosody, new_user,
                                                              xmpp_peer, homeserver):
    from .support.api import PREFIX, Api

    secret = "s" * 40
    await start_bridge(extra={
        "networks": {"xmpp": {"enabled": True, "ca_file": str(prosody.ca),
                              "nameserver": prosody.nameserver}},
        "provisioning": {"shared_secret": secret}})
    alice = await new_user("alice")
    alice_xmpp, bob = await xmpp_peer("alice"), await xmpp_peer("bob")
    await alice_xmpp.stop()
    api = Api(homeserver.appservice_url)
    me = {"user_id": alice.mxid}
    try:
        status, networks = await api.call("GET", f"{PREFIX}/networks", token=secret, query=me)
        assert {"name": "xmpp", "login_flows": ["password"]} in networks["networks"]
        status, step = await api.call("POST", f"{PREFIX}/link/xmpp", token=secret, query=me,
                                      body={"identifier": alice_xmpp.jid, "profile": "Privat"})
        assert status == 200 and step["fields"] == [
            {"name": "password", "label": f"Password of {alice_xmpp.jid}", "secret": True}]
        status, wrong = await api.call("POST", f"{PREFIX}/link/steps/{step['flow_id']}",
                                       token=secret, query=me,
                                       body={"answers": {"password": "wrong"}})
        assert status == 400 and "refused the password" in wrong["error"]
        status, personas = await api.call("GET", f"{PREFIX}/personas", token=secret, query=me)
        assert personas == {"personas": []}

        status, step = await api.call("POST", f"{PREFIX}/link/xmpp", token=secret, query=me,
                                      body={"identifier": alice_xmpp.jid, "profile": "Privat"})
        status, consent = await api.call("POST", f"{PREFIX}/link/steps/{step['flow_id']}",
                                         token=secret, query=me,
                                         body={"answers": {"password": alice_xmpp.password}})
        assert status == 200 and consent["fields"][0]["name"] == "consent"
        assert "Reply yes to link" in consent["message"]
        status, done = await api.call("POST", f"{PREFIX}/link/steps/{consent['flow_id']}",
                                      token=secret, query=me,
                                      body={"answers": {"consent": "yes"}})
        assert status == 200 and done["done"] is True
        assert done["persona"]["descriptor"]["external_user_id"] == alice_xmpp.jid
        assert done["persona"]["profile"] == "Privat"

        muc = f"api{bob.nick}@{MUC}"
        await bob.join(muc)
        status, rule = await api.call("POST", f"{PREFIX}/rules", token=secret, query=me,
                                      body={"network": "xmpp", "remote": muc,
                                            "profile": "Privat"})
        assert status == 201
        portal = await alice.wait_for_invite()
        bob.send(muc, "via the api")
        await alice.wait_for_event(portal, body_is("via the api"), "bob's message")
        status, rules = await api.call("GET", f"{PREFIX}/rules", token=secret, query=me)
        assert [r["id"] for r in rules["rules"]] == [rule["id"]]
        status, _ = await api.call("DELETE", f"{PREFIX}/rules/{rule['id']}", token=secret,
                                   query=me)
        assert status == 200
        persona_id = done["persona"]["id"]
        status, paused = await api.call("POST", f"{PREFIX}/personas/{persona_id}/pause",
                                        token=secret, query=me)
        assert (status, paused["status"]) == (200, "paused")
        status, resumed = await api.call("POST", f"{PREFIX}/personas/{persona_id}/resume",
                                         token=secret, query=me)
        assert (status, resumed["status"]) == (200, "active")
        status, _ = await api.call("DELETE", f"{PREFIX}/personas/{persona_id}",
                                   token=secret, query=me)
        assert status == 200
        status, personas = await api.call("GET", f"{PREFIX}/personas", token=secret, query=me)
        assert personas == {"personas": []}
    finally:
        await api.http.close()


async def test_formatting_both_ways(xmpp_bridge, new_user, xmpp_peer, homeserver):
    from mautrix.types import Format, MessageType, TextMessageEventContent

    alice = await new_user("alice")
    alice_xmpp, bob = await xmpp_peer("alice"), await xmpp_peer("bob")
    await alice_xmpp.stop()
    muc, portal = await mapped_muc(alice, alice_xmpp, bob, homeserver)

    def xhtml(msg):
        msg["html"]["body"] = "<strong>bold</strong> and <em>slanted</em>"

    bob.send(muc, "bold and slanted", html=xhtml)
    got = await alice.wait_for_event(portal, body_is("bold and slanted"), "formatted text")
    assert got.content.formatted_body == "<strong>bold</strong> and <em>slanted</em>"

    content = TextMessageEventContent(msgtype=MessageType.TEXT, body="**loud** <script>",
                                      format=Format.HTML,
                                      formatted_body="<b>loud</b> &lt;script&gt;<script>x</script>")
    await alice.client.send_message(portal, content)
    sent = await bob.wait_for(lambda m: m["body"] == "**loud** <script>", "formatted text")
    assert str(sent["html"]["body"]).replace(' xmlns="http://www.w3.org/1999/xhtml"', "") == (
        "<b>loud</b> &lt;script&gt;x")


async def test_files_both_ways(xmpp_bridge, new_user, xmpp_peer, homeserver):
    import io
    import os

    import aiohttp
    from mautrix.types import FileInfo, MediaMessageEventContent, MessageType

    alice = await new_user("alice")
    alice_xmpp, bob = await xmpp_peer("alice"), await xmpp_peer("bob")
    await alice_xmpp.stop()
    muc, portal = await mapped_muc(alice, alice_xmpp, bob, homeserver)

    # XMPP -> Matrix: an HTTP upload (XEP-0363) shared with an OOB link.
    data = os.urandom(20_000)
    url = await bob.client.plugin["xep_0363"].upload_file(
        "report.bin", size=len(data), content_type="application/octet-stream",
        input_file=io.BytesIO(data), timeout=30)

    def oob(msg):
        msg["oob"]["url"] = url

    bob.send(muc, url, file=oob)
    shared = await alice.wait_for_event(
        portal, lambda e: e.type == EventType.ROOM_MESSAGE
        and e.content.msgtype == MessageType.FILE, "the shared file")
    assert shared.content.body == "report.bin"
    assert await alice.client.download_media(shared.content.url) == data

    # Matrix -> XMPP: a Matrix upload arrives as an upload on the XMPP server.
    picture = os.urandom(5_000)
    mxc = await alice.client.upload_media(picture, mime_type="image/png",
                                          filename="cat.png")
    await alice.client.send_message(portal, MediaMessageEventContent(
        msgtype=MessageType.IMAGE, body="cat.png", url=mxc,
        info=FileInfo(mimetype="image/png", size=len(picture))))
    got = await bob.wait_for(lambda m: m.get_plugin("oob", check=True)
                             and m["oob"]["url"].endswith("cat.png"), "alice's picture")
    async with aiohttp.ClientSession() as http, http.get(got["oob"]["url"]) as response:
        assert await response.read() == picture


async def test_round_trip_matrix_xmpp_matrix(xmpp_bridge, new_user, xmpp_peer, homeserver,
                                             db_uri):
    """Measures (and reports) Matrix -> XMPP -> Matrix round trips; asserts only that every
    round trip completes, in order."""
    import statistics
    import time

    alice = await new_user("alice")
    alice_xmpp, bob = await xmpp_peer("alice"), await xmpp_peer("bob")
    await alice_xmpp.stop()
    muc, portal = await mapped_muc(alice, alice_xmpp, bob, homeserver)

    def echo(msg):
        if msg["type"] == "groupchat" and msg["body"].startswith("ping "):
            bob.send(muc, "pong " + msg["body"][5:])

    from slixmpp.xmlstream.handler import Callback
    from slixmpp.xmlstream.matcher import StanzaPath

    bob.client.register_handler(Callback("echo", StanzaPath("message"), echo))
    sync = await alice.client.sync(timeout=0)
    since = sync["next_batch"]
    rounds = []
    for i in range(20):
        started = time.perf_counter()
        await alice.send_text(portal, f"ping {i}")
        while True:
            sync = await alice.client.sync(since=since, timeout=10_000)
            since = sync["next_batch"]
            timeline = sync.get("rooms", {}).get("join", {}).get(portal, {}).get(
                "timeline", {}).get("events", [])
            if any(e.get("content", {}).get("body") == f"pong {i}" for e in timeline):
                break
        rounds.append(time.perf_counter() - started)
    median = statistics.median(rounds) * 1000
    print(f"\nMatrix -> XMPP -> Matrix round trip ({db_uri.split(':')[0]}): median "
          f"{median:.0f} ms over {len(rounds)} rounds")
    assert len(rounds) == 20


async def sync_token(user) -> str:
    return (await user.client.sync(timeout=0))["next_batch"]


async def wait_ephemeral(user, room: str, since: str, matches, what: str) -> None:
    """Wait until /sync, from `since` (taken before the action), reports a matching typing
    or receipt event in the room."""
    async with asyncio.timeout(DEADLINE):
        while True:
            sync = await user.client.sync(since=since, timeout=2000)
            since = sync["next_batch"]
            events = sync.get("rooms", {}).get("join", {}).get(room, {}).get(
                "ephemeral", {}).get("events", [])
            if any(matches(e) for e in events):
                return
    raise AssertionError(f"never saw {what}")


async def test_typing_and_read_markers_in_a_direct_chat(xmpp_bridge, new_user, xmpp_peer,
                                                        homeserver):
    alice = await new_user("alice")
    alice_xmpp, bob = await xmpp_peer("alice"), await xmpp_peer("bob")
    await alice_xmpp.stop()
    await link_xmpp(alice, alice_xmpp, homeserver)
    first = bob.send(alice_xmpp.jid, "are you there?", kind="chat")
    portal = await alice.wait_for_invite()
    hello = await alice.wait_for_event(portal, body_is("are you there?"), "bob's chat")
    ghost = hello.sender

    # Matrix -> XMPP: alice types, then reads bob's message.
    await alice.client.set_typing(portal, timeout=10_000)
    await bob.wait_for(lambda m: m["type"] == "chat" and m["chat_state"] == "composing",
                       "alice typing")
    await alice.client.send_receipt(portal, hello.event_id)
    marker = await bob.wait_for(lambda m: m.get_plugin("displayed", check=True)
                                and m["displayed"]["id"], "alice's read marker")
    assert marker["displayed"]["id"] == first

    # XMPP -> Matrix: bob types; bob reads alice's answer.
    def composing(msg):
        msg["chat_state"] = "composing"

    since = await sync_token(alice)
    bob.send(alice_xmpp.jid, "", kind="chat", state=composing)
    await wait_ephemeral(alice, portal, since, lambda e: e["type"] == "m.typing"
                         and ghost in e["content"]["user_ids"], "bob typing")
    await alice.send_text(portal, "yes, here")
    got = await bob.wait_for(lambda m: m["body"] == "yes, here", "alice's answer")

    def displayed(msg):
        msg["displayed"]["id"] = got["id"]

    since = await sync_token(alice)
    bob.send(alice_xmpp.jid, "", kind="chat", marker=displayed)
    await wait_ephemeral(alice, portal, since, lambda e: e["type"] == "m.receipt" and any(
        ghost in r.get("m.read", {}) for r in e["content"].values()), "bob's read receipt")


async def test_relay_and_inbound_only_rules(xmpp_bridge, new_user, xmpp_peer, homeserver):
    alice, carol = await new_user("alice"), await new_user("carol")
    alice_xmpp, bob = await xmpp_peer("alice"), await xmpp_peer("bob")
    await alice_xmpp.stop()
    relay_muc, quiet_muc = f"relay{bob.nick}@{MUC}", f"quiet{bob.nick}@{MUC}"
    await bob.join(relay_muc)
    await bob.join(quiet_muc)
    room = await link_xmpp(alice, alice_xmpp, homeserver)
    await alice.send_text(room, f"map xmpp {relay_muc} --relay")
    await alice.wait_for_notice(room, homeserver.bot_mxid, f"Mapped xmpp {relay_muc}")
    relay_portal = await alice.wait_for_invite()
    await alice.send_text(room, f"map xmpp {quiet_muc} --inbound-only")
    await alice.wait_for_notice(room, homeserver.bot_mxid, f"Mapped xmpp {quiet_muc}")
    quiet_portal = await alice.wait_for_invite()

    # Carol has no XMPP account: in the relay room her words go out through alice's.
    await xmpp_bridge.bot.intent.invite_user(relay_portal, carol.mxid)
    await carol.client.join_room_by_id(relay_portal)
    await carol.client.set_displayname("Carol")
    await carol.send_text(relay_portal, "hello via relay")
    got = await bob.wait_for(lambda m: m["body"] == "Carol: hello via relay", "the relay")
    assert got["from"].resource == alice_xmpp.nick

    # Inbound only: XMPP comes in, nothing goes out, and alice is told why.
    bob.send(quiet_muc, "listen only")
    await alice.wait_for_event(quiet_portal, body_is("listen only"), "the inbound message")
    await alice.send_text(quiet_portal, "should not leave")
    await alice.wait_for_notice(quiet_portal, homeserver.bot_mxid, "inbound only")
    bob.send(quiet_muc, "marker")
    await bob.wait_for(lambda m: m["body"] == "marker", "the marker")
    assert not [m for m in bob.messages if m["body"] == "should not leave"]


async def test_contact_avatar_becomes_the_ghosts(xmpp_bridge, new_user, xmpp_peer, homeserver):
    import os

    alice = await new_user("alice")
    alice_xmpp, bob = await xmpp_peer("alice"), await xmpp_peer("bob")
    await alice_xmpp.stop()
    picture = b"\x89PNG\r\n\x1a\n" + os.urandom(300)
    vcard = bob.client.plugin["xep_0054"].make_vcard()
    vcard["FN"] = "Bob Builder"
    vcard["PHOTO"]["TYPE"] = "image/png"
    vcard["PHOTO"]["BINVAL"] = picture
    await bob.client.plugin["xep_0054"].publish_vcard(vcard)
    await link_xmpp(alice, alice_xmpp, homeserver)
    bob.send(alice_xmpp.jid, "look at my picture", kind="chat")
    portal = await alice.wait_for_invite()
    hello = await alice.wait_for_event(portal, body_is("look at my picture"), "bob's chat")
    member = await alice.client.get_state_event(portal, EventType.ROOM_MEMBER, hello.sender)
    assert member.avatar_url, "the ghost has no avatar"
    assert await alice.client.download_media(member.avatar_url) == picture


async def test_pattern_rule_maps_rooms_the_person_is_invited_to(xmpp_bridge, new_user,
                                                                xmpp_peer, homeserver):
    from slixmpp import JID

    alice = await new_user("alice")
    alice_xmpp, bob = await xmpp_peer("alice"), await xmpp_peer("bob")
    await alice_xmpp.stop()
    room = await link_xmpp(alice, alice_xmpp, homeserver)
    await alice.send_text(room, f"map xmpp *@{MUC} --profile Jobb")
    await alice.wait_for_notice(room, homeserver.bot_mxid, "when you are invited to them")
    muc = f"invited{bob.nick}@{MUC}"
    await bob.join(muc)
    bob.client.plugin["xep_0249"].send_invitation(JID(alice_xmpp.jid), JID(muc))
    portal = await alice.wait_for_invite()
    bob.send(muc, "welcome in")
    await alice.wait_for_event(portal, body_is("welcome in"), "bob's message")
    await alice.send_text(room, "rules")
    rules = await alice.wait_for_notice(room, homeserver.bot_mxid, muc)
    assert f"*@{MUC}" in rules


async def test_a_link_to_an_internal_address_is_refused_with_a_notice(xmpp_bridge, new_user,
                                                                      xmpp_peer, homeserver):
    """An out-of-band link a contact sends is fetched by the core's media fetcher: one to
    an internal address (here a service on loopback the admin did not list, or a redirect
    to one from the trusted upload host) is never requested; the link still arrives as
    text and the room is told why the file did not."""
    internal = await RecordingServer().start()
    try:
        alice = await new_user("alice")
        alice_xmpp, bob = await xmpp_peer("alice"), await xmpp_peer("bob")
        await alice_xmpp.stop()
        muc, portal = await mapped_muc(alice, alice_xmpp, bob, homeserver)
        bot = homeserver.bot_mxid
        metadata = "http://169.254.169.254/latest/meta-data/secrets.txt"
        for url, why in ((internal.serve("/admin/secrets.txt", b"internal only"), "loopback"),
                         (internal.url("/admin/secrets.txt").replace("127.0.0.1", "localhost"),
                          "loopback"),
                         (metadata, "cloud metadata")):
            bob.send(muc, url, file=_oob(url))
            text = await alice.wait_for_event(portal, body_is(url), "the link as text")
            notice = await alice.wait_for_notice(portal, bot, "secrets.txt was not bridged",
                                                 after=text.event_id)
            assert notice == ("The file secrets.txt was not bridged: its address is not "
                              f"allowed (a {why} address).")
        assert internal.seen == []
    finally:
        await internal.stop()


def _oob(url: str):
    def attach(msg) -> None:
        msg["oob"]["url"] = url

    return attach
