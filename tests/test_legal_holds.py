"""Legal holds end to end: a hold on an XMPP room (real Prosody and Synapse) keeps every
version and deletion from both sides, sealed; the export bundle has the networks' own ids,
verifies with the public key alone, and names the file that was changed or removed; its RSMF
manifest has RSMF 2.0's documented structure. A custodian hold through the provisioning API
(loopback network) keeps only the custodian's messages, with attachments named by SHA-256.

The published RSMF 2.0 schema is not available offline, so tests/data holds a JSON schema of
its documented structure (fields, types, enums, required members); the references between
ids that the documentation asks for are checked here in code.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
import sqlite3
import subprocess
import sys
import time
from datetime import datetime
from html.parser import HTMLParser
from pathlib import Path

import jsonschema
import pytest
from mautrix.types import EventType

from bridge.compliance.export import BundleWriter, export_public_key_pem
from bridge.compliance.verify import BundleInvalid, bundle_files, load_public_key, verify_bundle
from bridge.db import open_database
from bridge.db.held_message import HeldMessage, HeldStore
from bridge.db.hold import HoldStore
from bridge.networks.base import Attachment, RemoteMessage, RemoteRoom, RemoteUser

from .conftest import DEFAULT_PERMISSIONS
from .fakes.slack import FakeSlack
from .fakes.slack.scenario import build_world
from .support.api import PREFIX, Api
from .support.loopback import LoopbackConnector
from .support.slack import link_slack, slack_settings
from .support.web import Browser
from .test_secrets_at_rest import database_bytes
from .test_xmpp import MUC, body_is, correction, link_xmpp, retraction

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((Path(__file__).parent / "data" / "rsmf_2_0_structure.schema.json")
                    .read_text())


async def cli(*args: str) -> subprocess.CompletedProcess:
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "bridge", *args], capture_output=True,
        text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})


async def held_when(store: HeldStore, hold_name: str, ready, what: str) -> list[HeldMessage]:
    """The hold's messages once `ready(messages, store)` says all was captured."""
    hold = await HoldStore(store.db).by_name(hold_name)
    assert hold is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        messages = await store.of_hold(hold.id)
        if await ready(messages, store):
            return messages
        await asyncio.sleep(0.2)
    state = [(m.side, m.remote_id, len(await store.versions(m.id)),
              len(await store.reactions(m.id)), m.deleted_side) for m in messages]
    raise AssertionError(f"the hold never kept {what}: it has {state}")


async def sent_through(bridge, event_id: str) -> None:
    """Until the queued send of `event_id` is done (the router, capture included, finished)."""
    for _ in range(300):
        if await bridge.storage.outbound.get(event_id) is None:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{event_id} was never sent")


async def dumped(db_uri: str) -> bytes:
    """The database as a dump (SQL text), like pg_dump for PostgreSQL."""
    if db_uri.startswith("sqlite:"):
        connection = sqlite3.connect(db_uri.removeprefix("sqlite:"))
        try:
            return "\n".join(connection.iterdump()).encode()
        finally:
            connection.close()
    return await database_bytes(db_uri)


def records(bundle: Path) -> list[dict]:
    return [json.loads(line) for line in
            (bundle / "messages.jsonl").read_text(encoding="utf-8").splitlines()]


def check_rsmf(bundle: Path) -> dict:
    manifest = json.loads((bundle / "rsmf_manifest.json").read_text(encoding="utf-8"))
    jsonschema.validate(manifest, SCHEMA)
    participants = {p["id"] for p in manifest["participants"]}
    conversations = {c["id"]: c for c in manifest["conversations"]}
    events = {e["id"]: e for e in manifest["events"]}
    for conversation in conversations.values():
        assert set(conversation["participants"]) <= participants
        assert conversation.get("custodian", next(iter(conversation["participants"]), None)) \
            in conversation["participants"] + [None]
    for event in manifest["events"]:
        assert event["participant"] in participants
        assert event["conversation"] in conversations
        datetime.fromisoformat(event["timestamp"])  # ISO 8601
        if "parent" in event:
            assert events[event["parent"]]["conversation"] == event["conversation"]
        for edit in event.get("edits", []):
            assert edit["participant"] in participants
            datetime.fromisoformat(edit["timestamp"])
        for reaction in event.get("reactions", []):
            assert set(reaction["participants"]) <= participants
        for attachment in event.get("attachments", []):
            assert (bundle / attachment["id"]).is_file()
    return manifest


async def test_a_room_hold_keeps_versions_and_deletions_from_both_sides_and_verifies(
        start_bridge, prosody, new_user, xmpp_peer, homeserver, db_uri, tmp_path):
    alice = await new_user("alice")
    bridge = await start_bridge(
        permissions={**DEFAULT_PERMISSIONS, alice.mxid: "admin"},
        extra={"networks": {"xmpp": {"enabled": True, "ca_file": str(prosody.ca),
                                     "nameserver": prosody.nameserver}}})
    alice_xmpp, bob = await xmpp_peer("alice"), await xmpp_peer("bob")
    await alice_xmpp.stop()
    muc = f"team{bob.nick}@{MUC}"
    await bob.join(muc)
    management = await link_xmpp(alice, alice_xmpp, homeserver)
    await alice.send_text(management, f"map xmpp {muc} --profile Jobb")
    await alice.wait_for_notice(management, homeserver.bot_mxid, f"Mapped xmpp {muc}")
    portal = await alice.wait_for_invite()
    await alice.send_text(management, f"admin hold create matter-7 --room xmpp {muc} "
                                      "--reason 'Matter 7 litigation'")
    await alice.wait_for_notice(management, homeserver.bot_mxid, "Hold in place: matter-7")

    # XMPP -> Matrix: written, corrected twice, reacted to in Matrix, retracted on XMPP.
    first = bob.send(muc, "quarterly numbers look bad")
    original = await alice.wait_for_event(portal, body_is("quarterly numbers look bad"),
                                          "bob's message", after=None)
    for text in ("quarterly numbers look fine", "quarterly numbers are fine, trust me"):
        bob.send(muc, text, edit=correction(first))
        await alice.wait_for_event(portal, lambda e, t=text: e.type == EventType.ROOM_MESSAGE
                                   and e.content.get_edit() == original.event_id
                                   and e.content.body == t, "bob's correction", after=None)
    await alice.client.react(portal, original.event_id, "🎉")
    await bob.wait_for(lambda m: m.get_plugin("reactions", check=True)
                       and "🎉" in m["reactions"]["values"], "alice's reaction")
    bob.send(muc, "retracted", retract=retraction(first))
    await alice.wait_for_event(portal, lambda e: e.type == EventType.ROOM_REDACTION
                               and e.redacts == original.event_id, "the retraction", after=None)

    # Matrix -> XMPP: sent, then redacted in Matrix.
    mine = await alice.send_text(portal, "shred the draft contract")
    sent = await bob.wait_for(lambda m: m["body"] == "shred the draft contract", "alice's")
    await alice.client.redact(portal, mine)
    await bob.wait_for(lambda m: m.get_plugin("retract", check=True), "alice's retraction")

    store = HeldStore(bridge.storage.db)

    async def complete(messages, store) -> bool:
        if len(messages) != 2 or not all(m.deleted_at for m in messages):
            return False
        theirs = next(m for m in messages if m.side == "remote")
        return (len(await store.versions(theirs.id)) == 3
                and len(await store.reactions(theirs.id)) == 1)

    held = await held_when(store, "matter-7", complete, "both messages, edits and deletions")
    theirs = next(m for m in held if m.side == "remote")
    ours = next(m for m in held if m.side == "matrix")
    assert (theirs.deleted_side, ours.deleted_side) == ("remote", "matrix")
    assert ours.deleted_by == alice.mxid and ours.deletion_mxid

    # Sealed: no text, edit or reaction is readable in a dump of the database.
    dump = await dumped(db_uri)
    assert b"held_version" in dump  # the dump really has the archive
    for text in ("quarterly numbers look bad", "quarterly numbers look fine",
                 "trust me", "shred the draft contract"):
        assert text.encode() not in dump, f"{text!r} is readable in the database"
    config_path = str(bridge.config.path)
    await bridge.stop()

    # The export, through the command line, and the public key for the reviewer.
    bundle = tmp_path / "bundle"
    done = await cli("-c", config_path, "export", "--hold", "matter-7", "--out", str(bundle))
    assert done.returncode == 0, done.stderr
    key = await cli("-c", config_path, "export", "public-key")
    assert key.returncode == 0 and "BEGIN PUBLIC KEY" in key.stdout, key.stderr
    key_file = tmp_path / "export.pub"
    key_file.write_text(key.stdout)

    lines = records(bundle)
    bobs = sorted((r for r in lines if r["export_id"] == theirs.id), key=lambda r: r["version"])
    assert [r["text"] for r in bobs] == ["quarterly numbers look bad",
                                         "quarterly numbers look fine",
                                         "quarterly numbers are fine, trust me"]
    stanza_id = bobs[0]["original_network_ids"]["stanza_id"]
    assert bobs[0]["network"] == "xmpp" and bobs[0]["network_ids"]["room"] == muc
    assert bobs[0]["network_ids"]["origin_id"] == first and stanza_id
    assert bobs[0]["matrix_room_id"] == portal
    assert bobs[0]["matrix_event_id"] == original.event_id
    assert all(r["original_matrix_event_id"] == original.event_id for r in bobs)
    assert [r["replaces"] for r in bobs][1:] == bobs[0]["edit_chain"][:2]
    assert bobs[2]["deletion"]["side"] == "remote"
    assert [(x["key"], x["sender"]["matrix_user"]) for x in bobs[0]["reactions"]] == [
        ("🎉", alice.mxid)]
    assert bobs[0]["sender"]["remote_id"] and bobs[0]["sender"]["matrix_user"]
    # A live XMPP message carries no time of its own (only delayed ones do): Matrix's time.
    assert bobs[0]["matrix_timestamp"] and "remote_timestamp" in bobs[0]
    [alices] = [r for r in lines if r["export_id"] == ours.id]
    assert alices["text"] == "shred the draft contract"
    assert alices["matrix_event_id"] == mine and alices["sender"]["matrix_user"] == alice.mxid
    assert alices["network_ids"]["origin_id"] == sent["id"]
    persona = alices["sender"]["persona"]  # the linked account it went out as
    assert (persona["platform"], persona["external_user_id"]) == ("xmpp", alice_xmpp.jid)
    assert alices["deletion"]["side"] == "matrix" and alices["deletion"]["by"] == alice.mxid
    assert json.loads((bundle / "hold.json").read_text())["reason"] == "Matter 7 litigation"
    assert [r["remote_room"] for r in json.loads((bundle / "rooms.json").read_text())] == [muc]

    rsmf = check_rsmf(bundle)
    [bob_event] = [e for e in rsmf["events"] if e["id"] == theirs.id]
    assert bob_event["deleted"] and len(bob_event["edits"]) == 2
    assert bob_event["edits"][0]["previous"] == "quarterly numbers look bad"
    assert bob_event["reactions"][0]["value"] == "🎉"

    # Verified with the public key alone (no config, no vault) ...
    public_key = load_public_key(key_file.read_bytes())
    assert verify_bundle(bundle, public_key) == len(bundle_files(bundle)) - 2
    # ... and one changed byte is named, by the command line too.
    target = bundle / "messages.jsonl"
    original_bytes = target.read_bytes()
    target.write_bytes(original_bytes[:10] + bytes([original_bytes[10] ^ 1])
                       + original_bytes[11:])
    bad = await cli("export", "verify", str(bundle), "--public-key", str(key_file))
    assert bad.returncode == 1 and "messages.jsonl: changed" in bad.stderr, bad.stderr
    target.write_bytes(original_bytes)
    verify_bundle(bundle, public_key)
    (bundle / "rooms.json").unlink()
    with pytest.raises(BundleInvalid, match=r"^rooms\.json: removed$"):
        verify_bundle(bundle, public_key)

    # Every hold action is in the audit log.
    storage = await open_database(db_uri)
    try:
        trail = [json.loads(r.details) for r in await storage.audit_log.latest(500)
                 if r.event_type == "legal_hold"]
    finally:
        await storage.close()
    assert [t["what"] for t in trail] == ["created", "exported"]
    assert trail[0]["hold"] == "matter-7" and trail[1]["messages"] == 2


class Labels(HTMLParser):
    """The page's form fields and the ids its labels point at."""

    def __init__(self) -> None:
        super().__init__()
        self.fields: list[str] = []
        self.labelled: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag in ("input", "select", "textarea") and found.get("type") != "hidden":
            self.fields.append(found.get("id") or f"<{tag} name={found.get('name')}>")
        if tag == "label" and found.get("for"):
            self.labelled.add(found["for"] or "")


async def dashboard_page(admin, alice, homeserver, exports: Path) -> None:
    """/admin/holds: admins only; every field labelled; a hold made by its form; an export
    started by its button, shown as done, that verifies."""
    web, outsider = Browser(homeserver.appservice_url), Browser(homeserver.appservice_url)
    try:
        for browser, user in ((web, admin), (outsider, alice)):
            room = await user.open_management_room(homeserver.bot_mxid)
            await user.send_text(room, "login-link")
            link = await user.wait_for_notice(room, homeserver.bot_mxid, "/auth/matrix?token=")
            status, _ = await browser.matrix_sign_in(link.rsplit("token=", 1)[1].strip())
            assert status == 200
        status, page = await outsider.get("/admin/holds")
        assert status == 403
        status, dashboard = await web.get("/admin/dashboard")
        assert status == 200 and 'href="/admin/holds"' in dashboard
        status, page = await web.get("/admin/holds")
        assert status == 200 and "alice-2026" in page and "lb-files" in page
        labels = Labels()
        labels.feed(page)
        assert labels.fields and set(labels.fields) <= labels.labelled, labels.fields
        status, done = await web.post_form("/admin/holds", {
            "csrf": await web.csrf("/admin/holds"), "name": "acme-team", "scope": "workspace",
            "network": "loopback", "target": "acme", "from": "2026-01-01", "until": "",
            "reason": "Acme dispute"})
        assert status == 200 and "Hold acme-team created" in done, done
        status, refused = await web.post_form("/admin/holds", {
            "csrf": await web.csrf("/admin/holds"), "name": "bad", "scope": "room",
            "target": "x"})
        assert status == 400 and "network:" in refused

        status, started = await web.post_form("/admin/holds/export", {
            "csrf": await web.csrf("/admin/holds"), "name": "lb-files"})
        assert status == 200 and "Exporting hold lb-files" in started
        for _ in range(100):
            status, page = await web.get("/admin/holds")
            if 'id="exported-lb-files"' in page:
                break
            await asyncio.sleep(0.1)
        assert 'id="exported-lb-files"' in page and "Exported 1 messages" in page, page
        [bundle] = list(exports.iterdir())
        assert bundle.name.startswith("lb-files-") and (bundle / "rsmf_manifest.json").is_file()
    finally:
        await web.close()
        await outsider.close()


async def test_a_custodian_hold_through_the_api_keeps_only_the_custodians_messages(
        start_bridge, new_user, homeserver, tmp_path):
    admin, alice = await new_user("admin"), await new_user("alice")
    secret = secrets.token_hex(24)
    loopback = LoopbackConnector()
    bridge = await start_bridge(
        [loopback], permissions={**DEFAULT_PERMISSIONS, admin.mxid: "admin"},
        extra={"provisioning": {"shared_secret": secret},
               "compliance": {"export_directory": str(tmp_path / "exports")}})
    api = Api(homeserver.appservice_url)
    try:
        as_alice = {"user_id": alice.mxid}
        status, refused = await api.call("GET", f"{PREFIX}/holds", token=secret,
                                         query=as_alice)
        assert status == 403 and "admin" in refused["error"]
        as_admin = {"user_id": admin.mxid}
        status, bad = await api.call("POST", f"{PREFIX}/holds", token=secret, query=as_admin,
                                     body={"name": "x", "scope": "user", "target": "alice"})
        assert status == 400 and bad["error"].startswith("target:")
        status, hold = await api.call("POST", f"{PREFIX}/holds", token=secret, query=as_admin,
                                      body={"name": "alice-2026", "scope": "user",
                                            "target": alice.mxid, "from": "2020-01-01",
                                            "reason": "Custodian Alice"})
        assert status == 201 and hold["active"] and hold["created_by"] == admin.mxid
        status, _ = await api.call("POST", f"{PREFIX}/holds", token=secret,
                                           query=as_admin, body={
                                               "name": "lb-files", "scope": "room",
                                               "network": "loopback", "target": "files-room"})
        assert status == 201

        # In a room no hold names, only the custodian's own message is kept.
        room, rita = RemoteRoom("chan-hold", name="Held channel"), RemoteUser("rita")
        await loopback.emit(RemoteMessage(room=room, sender=rita, receiver=alice.mxid,
                                          message_id="r-1", text="rita is not a custodian"))
        portal = await alice.wait_for_invite()
        await alice.wait_for_event(portal, body_is("rita is not a custodian"), "rita's",
                                   after=None)
        await alice.send_text(portal, "alice's own words stay")
        await loopback.next_received()
        # A file in the held room: kept as bytes, named by their SHA-256 in the export.
        data = b"\x89PNG held attachment bytes"
        await loopback.emit(RemoteMessage(
            room=RemoteRoom("files-room", name="Files"), sender=rita, receiver=alice.mxid,
            message_id="f-1", text="plan.png", attachment=Attachment("plan.png", "image/png",
                                                                     data)))
        store = HeldStore(bridge.storage.db)

        async def one(messages, _) -> bool:
            return len(messages) == 1

        [kept] = await held_when(store, "alice-2026", one, "alice's message")
        kept_hold = next(h.id for h in await HoldStore(bridge.storage.db).all()
                         if h.name == "alice-2026")
        assert (kept.sender_mxid, kept.side) == (alice.mxid, "matrix")
        [file] = await held_when(store, "lb-files", one, "the file")
        assert file.remote_id == "f-1"

        status, listed = await api.call("GET", f"{PREFIX}/holds", token=secret, query=as_admin)
        assert status == 200
        assert {h["name"]: h["messages"] for h in listed["holds"]} == {"alice-2026": 1,
                                                                       "lb-files": 1}
        exports = tmp_path / "exports"
        await dashboard_page(admin, alice, homeserver, exports)
        [dashboard_bundle] = list(exports.iterdir())

        bundle = tmp_path / "files"
        writer = BundleWriter(bridge.storage, bridge.web.holds, bridge.router.archive,
                              bridge.security.vault, bridge.security.audit)
        await writer.write("lb-files", bundle, admin.mxid)
        digest = hashlib.sha256(data).hexdigest()
        assert (bundle / "attachments" / digest).read_bytes() == data
        [line] = records(bundle)
        assert line["attachment"]["sha256"] == digest and line["attachment"]["name"] == "plan.png"
        assert check_rsmf(bundle)["events"][0]["attachments"][0]["id"] == f"attachments/{digest}"
        public_key = load_public_key(await export_public_key_pem(bridge.security.vault))
        verify_bundle(bundle, public_key)
        verify_bundle(dashboard_bundle, public_key)
        (bundle / "attachments" / "extra.bin").write_bytes(b"slipped in")
        with pytest.raises(BundleInvalid, match=r"^attachments/extra\.bin: added"):
            verify_bundle(bundle, public_key)
        (bundle / "attachments" / "extra.bin").unlink()
        manifest = (bundle / "manifest.json").read_text()
        (bundle / "manifest.json").write_text(manifest.replace(digest, "0" * 64))
        with pytest.raises(BundleInvalid, match=r"^manifest\.json: changed"):
            verify_bundle(bundle, public_key)
        assert data not in await dumped(bridge.config["database.uri"])

        status, released = await api.call("POST", f"{PREFIX}/holds/alice-2026/release",
                                           token=secret, query=as_admin)
        assert status == 200 and not released["active"]
        assert released["released_by"] == admin.mxid
        status, again = await api.call("POST", f"{PREFIX}/holds/alice-2026/release",
                                       token=secret, query=as_admin)
        assert status == 400 and "released already" in again["error"]
        status, _ = await api.call("POST", f"{PREFIX}/holds/nothing/release", token=secret,
                                   query=as_admin)
        assert status == 404
        # Released: new messages of the custodian are no longer kept (the queued send is
        # gone only once the router, capture included, has finished with it).
        later = await alice.send_text(portal, "after the release")
        await loopback.next_received()
        await sent_through(bridge, later)
        assert [m.remote_id for m in await store.of_hold(kept_hold)] == [kept.remote_id]
    finally:
        await api.http.close()
    trail = [json.loads(r.details) for r in await bridge.security.audit.latest(200)
             if r.event_type == "legal_hold"]
    assert [(t["what"], t.get("hold")) for t in trail if t["what"] != "listed"] == [
        ("created", "alice-2026"), ("created", "lb-files"), ("created", "acme-team"),
        ("exported", "lb-files"), ("exported", "lb-files"), ("released", "alice-2026")]
    # The API once, the page at each load (at least five).
    assert sum(t["what"] == "listed" for t in trail) >= 6
    assert all(r.actor == admin.mxid for r in await bridge.security.audit.latest(200)
               if r.event_type == "legal_hold")


async def test_a_workspace_hold_on_slack_keeps_the_teams_ids_and_files(
        start_bridge, new_user, homeserver, tmp_path):
    """Through the Slack fake (unmodified slack-sdk): a hold on the team keeps a message, its
    edit and deletion with Slack's own team/channel/ts, and a file as its bytes."""
    async with FakeSlack() as slack:
        world = build_world(slack)
        alice = await new_user("alice")
        bot = homeserver.bot_mxid
        callback = f"{homeserver.appservice_url}/link/slack/callback"
        bridge = await start_bridge(permissions={**DEFAULT_PERMISSIONS, alice.mxid: "admin"},
                                    extra={"networks": {"slack": slack_settings(slack,
                                                                                callback)}})
        room = await link_slack(alice, bot, slack, world.alice)
        await alice.send_text(room, f"admin hold create acme --workspace slack {world.team.id}")
        await alice.wait_for_notice(room, bot, "Hold in place: acme")
        await alice.send_text(room, f"map slack {world.team.id}/#general --profile Jobb")
        portal = await alice.wait_for_invite()
        general = world.general
        bobs = await slack.post_message(world.bob, general, "frist draft of the deal")
        first = await alice.wait_for_event(portal, body_is("frist draft of the deal"),
                                           "bob's message", after=None)
        await slack.edit_message(world.bob, general, bobs.ts, "first draft of the deal")
        await alice.wait_for_event(portal, lambda e: e.type == EventType.ROOM_MESSAGE
                                   and e.content.get_edit() == first.event_id, "the edit",
                                   after=None)
        await slack.upload_file(world.bob, general, "terms.txt", b"net 30, no refunds")
        await alice.wait_for_event(portal, body_is("terms.txt"), "bob's file", after=None)
        await slack.delete_message(general, bobs.ts, user=world.bob)
        await alice.wait_for_event(portal, lambda e: e.type == EventType.ROOM_REDACTION
                                   and e.redacts == first.event_id, "the deletion", after=None)

        store = HeldStore(bridge.storage.db)

        async def complete(messages, store) -> bool:
            texts = [m for m in messages if m.mxid == first.event_id]
            return (len(messages) == 2 and len(texts) == 1 and texts[0].deleted_at is not None
                    and len(await store.versions(texts[0].id)) == 2)

        await held_when(store, "acme", complete, "the message, its edit, deletion and file")
        bundle = tmp_path / "acme"
        await BundleWriter(bridge.storage, bridge.web.holds, bridge.router.archive,
                           bridge.security.vault, bridge.security.audit).write(
            "acme", bundle, alice.mxid)
        lines = records(bundle)
        texts = sorted((r for r in lines if r["original_matrix_event_id"] == first.event_id),
                       key=lambda r: r["version"])
        assert [r["text"] for r in texts] == ["frist draft of the deal",
                                              "first draft of the deal"]
        assert texts[0]["network_ids"] == {"team": world.team.id, "channel": general.id,
                                           "ts": bobs.ts}
        assert texts[0]["workspace"] == world.team.id
        assert texts[1]["deletion"]["side"] == "remote"
        [file] = [r for r in lines if r["attachment"]]
        digest = hashlib.sha256(b"net 30, no refunds").hexdigest()
        assert file["attachment"]["sha256"] == digest and file["attachment"]["name"] == "terms.txt"
        assert (bundle / "attachments" / digest).read_bytes() == b"net 30, no refunds"
        check_rsmf(bundle)
        verify_bundle(bundle, load_public_key(await export_public_key_pem(bridge.security.vault)))
        dump = await dumped(bridge.config["database.uri"])
        for secret in (b"draft of the deal", b"net 30, no refunds"):
            assert secret not in dump
