"""Retention, data residency, my-data and forget-me (issue 15), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import attrs
import pytest
from mautrix.types import EventType, MessageType, RoomCreatePreset, RoomID

from bridge.audit import AuditEvent
from bridge.bot.privacy_commands import PHRASE
from bridge.compliance.archive import Captured, CaptureKind, HoldArchive
from bridge.compliance.holds import Holds
from bridge.compliance.residency import Residency
from bridge.compliance.retention import DAY_MS, Retention
from bridge.core.linking import LinkRefused
from bridge.db import MessageKind, MessageRow, open_database
from bridge.db.capability import CapabilityRule
from bridge.db.mapping_rule import MappingRule
from bridge.db.outbound import OutboundState
from bridge.networks.base import RemoteMessage, RemoteRoom, RemoteUser
from bridge.networks.login import Field, LinkedAccount, LoginStep
from bridge.security.setup import open_security
from bridge.security.vault import VaultError

from .support.api import PREFIX, Api
from .support.configs import admin_config
from .support.loopback import LoopbackConnector
from .support.matrix import DEADLINE

ROOT = Path(__file__).resolve().parent.parent
SECRET = secrets.token_urlsafe(32)
EU_STORES = {"database": "EU", "vault": "eu", "homeserver_media": "EU",
             "export_directory": "EU"}


class WorkspaceLoopback(LoopbackConnector):
    """The loopback network with workspaces ("team/room"), that can join rooms and link an
    account "team/user" with a password."""

    def login_flows(self) -> list[str]:
        return ["password"]

    async def begin_login(self, identifier: str | None) -> LoginStep:
        return LoginStep(message="Your password?", state={"who": identifier},
                         fields=[Field("password", "password", secret=True)])

    async def continue_login(self, state: dict, answers: dict[str, str]) -> LinkedAccount:
        return LinkedAccount(state["who"], None, [], {"password": answers["password"]},
                             ["signed in"])

    def workspace_of(self, channel: str) -> str:
        return channel.partition("/")[0] if "/" in channel else ""

    async def join(self, persona_id: str, remote_room_id: str,
                   since_ms: int | None = None) -> RemoteRoom:
        return RemoteRoom(remote_id=remote_room_id, name=f"Room {remote_room_id}")


def bridge_cli(config_path: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bridge", "-c", config_path, *args],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


async def database_dump(db_uri: str) -> str:
    if db_uri.startswith("sqlite:"):
        command = ["sqlite3", db_uri.removeprefix("sqlite:"), ".dump"]
    else:
        command = ["pg_dump", "--data-only", db_uri]
    result = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True,
                                     timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


# ---- residency --------------------------------------------------------------------------


def test_residency_refuses_a_misdeclared_store_at_start_up(tmp_path):
    database = tmp_path / "relayforge.db"
    config = admin_config(tmp_path, f"sqlite:{database}", compliance={"residency": {
        "regions": ["EU"], "stores": {**EU_STORES, "vault": "US"} | {"export_directory": None}}})
    result = bridge_cli(config.path)
    assert result.returncode == 2
    assert "compliance.residency.stores.vault: the vault's key provider (vault.provider) is " \
        "declared in US, outside the allowed regions (EU)" in result.stderr
    assert "compliance.residency.stores.export_directory: undeclared" in result.stderr
    # Refused before anything was written: no database, no key file.
    assert not database.exists() and not (tmp_path / "master.key").exists()


def test_network_regions_by_workspace_and_whole_network():
    residency = Residency(frozenset({"EU"}), {"slack": {"T1": "eu", "*": "US"},
                                               "telegram": "US", "xmpp": {"a.example": "EU"}})
    assert residency.network_refusal("slack", "T1", "T1/#general") is None
    refusal = residency.network_refusal("slack", "T9", "T9/#general")
    assert refusal is not None and "slack workspace T9" in refusal and "in US" in refusal
    assert "in US" in residency.network_refusal("telegram", "", "an account on telegram")
    # Before a login says which workspace an account is in, only a whole network counts.
    assert residency.network_refusal("slack", None, "an account on slack") is None
    assert "in US" in residency.network_refusal("telegram", None, "an account on telegram")
    assert residency.network_refusal("xmpp", "b.example", "x@b.example") is None  # undeclared
    assert residency.network_refusal("discord", "G1", "G1/C1") is None


async def test_residency_portals_do_not_federate_and_other_rooms_are_refused(
        start_bridge, new_user, homeserver):
    bridge = await start_bridge(connectors=[WorkspaceLoopback()], extra={
        "provisioning": {"shared_secret": SECRET},
        "compliance": {"residency": {"regions": ["EU"], "stores": EU_STORES,
                                     "networks": {"loopback": {"us-team": "US",
                                                               "eu-team": "EU"}}}}})
    bot = homeserver.bot_mxid
    alice = await new_user("alice")
    room = await alice.open_management_room(bot)
    account = await bridge.accounts.for_matrix_user(alice.mxid)
    await bridge.accounts.add_persona(account.id, "Jobb", platform="loopback",
                                      external_user_id=f"alice-{secrets.token_hex(3)}",
                                      display_name="Alice", scopes=[], actor=alice.mxid)

    # A portal the bridge makes does not federate.
    loopback = bridge.connectors["loopback"]
    await loopback.emit(RemoteMessage(room=RemoteRoom(f"eu-team/dm-{secrets.token_hex(3)}"),
                                      sender=RemoteUser("rita", display_name="Rita"),
                                      receiver=alice.mxid, message_id="m-1", text="hello"))
    portal = await alice.wait_for_invite()
    create = await alice.client.get_state_event(portal, EventType.ROOM_CREATE)
    assert create.federate is False

    # A workspace the admin declared in another region: refused, the same in bot and API.
    await alice.send_text(room, "map loopback us-team/general")
    said = await alice.wait_for_notice(room, bot, "Refused by data residency")
    assert "loopback workspace us-team" in said and "in US" in said
    api = Api(homeserver.appservice_url)
    try:
        status, body = await api.call("POST", PREFIX + "/rules", token=SECRET,
                                      query={"user_id": alice.mxid},
                                      body={"network": "loopback", "remote": "us-team/general"})
        assert (status, body["error"]) == (400, said)

        # A room that federates (Matrix's default) cannot be a portal.
        # (Public, so the bot joins it without an invite: an invite alone would make it
        # look like a new management room.)
        federated = await alice.client.create_room(preset=RoomCreatePreset.PUBLIC)
        await alice.send_text(room, f"map loopback eu-team/general --room {federated}")
        said = await alice.wait_for_notice(room, bot, "federates with other homeservers")
        status, body = await api.call("POST", PREFIX + "/rules", token=SECRET,
                                      query={"user_id": alice.mxid},
                                      body={"network": "loopback", "remote": "eu-team/general",
                                            "target_room": federated})
        assert (status, body["error"]) == (403, said)
    finally:
        await api.http.close()

    # Linking an account of that workspace is refused too, before anything is sealed; one of
    # an allowed workspace goes on to the consent question.
    flow, _ = await bridge.linking.start(account.id, "loopback", "us-team/alice2", "Jobb")
    with pytest.raises(LinkRefused, match="Refused by data residency: us-team/alice2 on "
                       "loopback is on loopback workspace us-team"):
        await bridge.linking.submit(account.id, flow, {"password": "pw"}, actor=alice.mxid)
    flow, _ = await bridge.linking.start(account.id, "loopback", "eu-team/alice2", "Jobb")
    _, consent = await bridge.linking.submit(account.id, flow, {"password": "pw"},
                                             actor=alice.mxid)
    assert "Reply yes to link the account" in consent.message

    # One created with federation off is a room of this homeserver that stays here.
    local = await alice.client.create_room(preset=RoomCreatePreset.PUBLIC,
                                           creation_content={"m.federate": False})
    await alice.send_text(room, f"map loopback eu-team/general --room {local}")
    await alice.wait_for_notice(room, bot, f"Mapped loopback eu-team/general into Jobb ({local})")

    # The profile's space, made after the bot's first answers, does not federate either.
    deadline = time.monotonic() + DEADLINE
    while not (space := await bridge.storage.profiles.space_of(
            (await bridge.storage.profiles.by_name(account.id, "Jobb")).id)):
        assert time.monotonic() < deadline, "the profile's space was never made"
        await asyncio.sleep(0.1)
    space_create = await bridge.appservice.intent.get_state_event(RoomID(space),
                                                                 EventType.ROOM_CREATE)
    assert space_create.federate is False


# ---- retention --------------------------------------------------------------------------


@pytest.fixture
async def offline(tmp_path, db_uri):
    """Storage, security and holds without a homeserver."""
    config = admin_config(tmp_path, db_uri)
    storage = await open_database(db_uri)
    security = await open_security(config, storage)
    holds = Holds(storage, security.audit)
    yield storage, security, holds
    await security.close()
    await storage.close()


async def test_retention_purges_what_is_not_held_and_keeps_what_is(offline):
    storage, security, holds = offline
    archive = HoldArchive(storage, holds, security.vault, security.audit)
    now = int(time.time() * 1000)
    rooms = {}
    for name in ("held", "free", "released"):
        rooms[name] = f"{name}-{secrets.token_hex(3)}"
        await storage.portals.insert("slack", rooms[name], RoomID(f"!{rooms[name]}:localhost"),
                                     name)
    for name, room in rooms.items():
        await storage.messages.insert(MessageRow(
            "slack", room, f"{name}-1", MessageKind.MESSAGE, f"${name}-1", f"!{room}:localhost",
            "@slack_rita:localhost", timestamp=now))
    await holds.create(name="case-held", scope="room", network="slack", target=rooms["held"],
                       actor="@admin:localhost")
    await holds.create(name="case-released", scope="room", network="slack",
                       target=rooms["released"], actor="@admin:localhost")
    for name in ("held", "released"):
        await archive.capture(Captured(
            kind=CaptureKind.MESSAGE, side="remote", network="slack", remote_room=rooms[name],
            room_mxid=f"!{rooms[name]}:localhost", remote_id=f"{name}-1",
            event_id=f"${name}-1", text=f"the {name} words", remote_ts=now))
    await holds.release("case-released", "@admin:localhost")
    await storage.outbound.add("$out-failed", "!r:localhost", "slack", rooms["free"],
                               "@alice:localhost", {"body": "never sent"})
    await storage.outbound.fail((await storage.outbound.get("$out-failed")).seq, 8, "gave up")
    await storage.outbound.add("$out-queued", "!r:localhost", "slack", rooms["free"],
                               "@alice:localhost", {"body": "on its way"})

    retention = Retention(storage, security.audit, days=30, interval_seconds=3600)
    # Nothing is older than 30 days yet: nothing goes, and nothing is audited.
    assert (await retention.purge()).total == 0
    purged = await retention.purge(now_ms=now + 31 * DAY_MS)
    assert (purged.messages, purged.outbound, purged.held) == (2, 1, 1)
    assert await storage.messages.get_by_mxid("$held-1") is not None
    assert await storage.messages.get_by_mxid("$free-1") is None
    assert await storage.messages.get_by_mxid("$released-1") is None
    assert await storage.outbound.get("$out-failed") is None
    assert (await storage.outbound.get("$out-queued")).state == OutboundState.QUEUED
    [record] = [r for r in await security.audit.latest(5)
                if r.event_type == AuditEvent.RETENTION_PURGE]
    assert json.loads(record.details) == {"retention_days": 30, "message_maps": 2,
                                          "queued_sends": 1, "held_messages": 1}
    assert "words" not in record.details and "never sent" not in record.details

    # The background task purges on its own, every interval.
    await storage.messages.insert(MessageRow(
        "slack", rooms["free"], "old-1", MessageKind.MESSAGE, "$old-1",
        f"!{rooms['free']}:localhost", "@slack_rita:localhost", timestamp=now - 31 * DAY_MS))
    task = Retention(storage, security.audit, days=30, interval_seconds=0.05)
    task.start()
    try:
        deadline = time.monotonic() + DEADLINE
        while await storage.messages.get_by_mxid("$old-1") is not None:
            assert time.monotonic() < deadline, "the background purge never ran"
            await asyncio.sleep(0.05)
    finally:
        await task.stop()
    assert await storage.messages.get_by_mxid("$held-1") is not None
    assert await security.audit.verify() == []


# ---- my-data and forget-me --------------------------------------------------------------


async def test_my_data_then_forget_me_leaves_nothing_readable(start_bridge, new_user,
                                                              homeserver, db_uri):
    bridge = await start_bridge(extra={"provisioning": {"shared_secret": SECRET}})
    bot = homeserver.bot_mxid
    alice = await new_user("alice")
    room = await alice.open_management_room(bot)
    account = await bridge.accounts.for_matrix_user(alice.mxid)
    tag = secrets.token_hex(4)
    external, name, credential = f"ext{tag}", f"Alicia Remote {tag}", f"xoxp-secret-{tag}"
    persona = await bridge.accounts.add_persona(
        account.id, "Jobb", platform="loopback", external_user_id=external, display_name=name,
        scopes=["chat:write"], actor=alice.mxid)
    await bridge.security.vault.seal(*persona.vault_ref, "access_token", credential)
    profiles = await bridge.storage.profiles.for_account(account.id)
    await bridge.storage.rules.add(MappingRule(f"rule_{tag}", account.id, persona.profile_id,
                                               "loopback", f"chan-{tag}", None, False, False))
    await bridge.storage.capabilities.add(CapabilityRule(
        f"cap_{tag}", account.id, persona.profile_id, persona.id, "deny", ("send",),
        "loopback", "", f"chan-{tag}"))
    # Their remote account speaks in a room: a ghost, a portal and a message map.
    loopback = bridge.connectors["loopback"]
    await loopback.emit(RemoteMessage(room=RemoteRoom(f"chan-{tag}"),
                                      sender=RemoteUser(external, display_name=name),
                                      receiver=alice.mxid, message_id=f"m-{tag}", text="hi"))
    portal = await alice.wait_for_invite()
    await alice.wait_for_event(portal, lambda e: getattr(e.content, "body", "") == "hi",
                               "the remote message", after=None)

    # my-data: a JSON file in the management room, the same as the API's.
    await alice.send_text(room, "my-data")
    await alice.wait_for_notice(room, bot, "Here is everything RelayForge holds about you")
    event = await alice.wait_for_event(
        room, lambda e: e.type == EventType.ROOM_MESSAGE and e.sender == bot
        and e.content.msgtype == MessageType.FILE, "the my-data file")
    raw = await alice.client.download_media(event.content.url)
    assert credential.encode() not in raw
    mine = json.loads(raw)
    assert mine["account"]["id"] == account.id
    assert mine["account"]["matrix_users"] == [alice.mxid]
    [jobb] = [p for p in mine["profiles"] if p["name"] == "Jobb"]
    assert jobb["personas"] == [{"id": persona.id, "status": "active",
                                 "descriptor": persona.descriptor()}]
    assert [r["remote"] for r in mine["rules"]] == [f"chan-{tag}"]
    assert [c["channel"] for c in mine["capabilities"]] == [f"chan-{tag}"]
    assert {"account_created", "link"} <= {r["event"] for r in mine["audit"]}
    api = Api(homeserver.appservice_url)
    try:
        status, via_api = await api.call("GET", PREFIX + "/my-data", token=SECRET,
                                         query={"user_id": alice.mxid})
    finally:
        await api.http.close()
    assert status == 200 and credential not in json.dumps(via_api)
    assert via_api["profiles"] == mine["profiles"] and via_api["rules"] == mine["rules"]

    # A legal hold naming them refuses forget-me, saying only that one applies.
    holds = bridge.web.holds
    await holds.create(name=f"case-{tag}", scope="account", target=account.id,
                       actor="@admin:localhost", reason="litigation Foo v Bar")
    await alice.send_text(room, "forget-me")
    said = await alice.wait_for_notice(room, bot, "A legal hold applies")
    assert "Foo" not in said and f"case-{tag}" not in said
    await holds.release(f"case-{tag}", "@admin:localhost")

    # Asked twice: yes, then the exact phrase.
    await alice.send_text(room, "forget-me")
    await alice.wait_for_notice(room, bot, "Are you sure?")
    await alice.send_text(room, "yes")
    await alice.wait_for_notice(room, bot, "send exactly")
    await alice.send_text(room, PHRASE)
    done = await alice.wait_for_notice(room, bot, "Done.")
    pseudonym = done.split("name you ")[1].split(".")[0]

    assert await bridge.storage.accounts.by_mxid(alice.mxid) is None
    assert await bridge.storage.personas.by_external("loopback", external) is None
    for vault_profile in {persona.vault_profile, account.id, *(p.id for p in profiles)}:
        assert await bridge.storage.vault_keys.data_key(vault_profile) is None
    with pytest.raises(VaultError):
        await bridge.security.vault.open(*persona.vault_ref, "access_token")
    # (A released hold still names its custodian: the legal record of the hold itself.)
    dump = "\n".join(line for line in (await database_dump(db_uri)).splitlines()
                     if f"case-{tag}" not in line)
    for identifier in (credential, external, name, persona.id, account.id, alice.mxid,
                       *(p.id for p in profiles)):
        assert identifier not in dump, f"{identifier} is still in the database"
    assert pseudonym in dump

    # The audit chain still verifies, in the bridge and with the admin command.
    assert await bridge.security.audit.verify() == []
    result = await asyncio.to_thread(bridge_cli, bridge.config.path, "audit", "verify")
    assert result.returncode == 0, result.stderr
    [forget] = [r for r in await bridge.security.audit.latest(5)
                if r.event_type == AuditEvent.FORGET]
    assert forget.actor == pseudonym and json.loads(forget.details)["personas"] == 1


async def test_a_changed_pseudonymised_record_is_caught(offline):
    storage, security, _ = offline
    for n in range(3):
        await security.audit.append(AuditEvent.LINK, actor="@bob:localhost", account="acct_b",
                                    details={"n": n, "who": "@bob:localhost"})
    await security.audit.append(AuditEvent.LINK, actor="@carol:localhost", details={"n": 9})

    def rewrite(row):
        if row.account != "acct_b":
            return None
        return attrs.evolve(row, actor="forgotten-x", account="forgotten-x",
                            details=row.details.replace("@bob:localhost", "forgotten-x"))

    assert await security.audit.pseudonymise(rewrite) == 3
    assert await security.audit.verify() == []
    await storage.db.execute("UPDATE audit_log SET details=$1 WHERE seq=2",
                             '{"n":7,"who":"forgotten-x"}')
    [problem] = await security.audit.verify()
    assert problem.message == "record 2 was changed: its MAC does not match"
