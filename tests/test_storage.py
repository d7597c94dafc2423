"""Every table on SQLite and on PostgreSQL."""

from __future__ import annotations

import time

import pytest

from bridge.db import MessageKind, MessageRow, Puppet, open_database
from bridge.db.transaction import RETENTION_MS


@pytest.fixture
async def storage(db_uri):
    storage = await open_database(db_uri)
    yield storage
    await storage.close()


async def test_schema_is_migrated_once_and_reopens(db_uri):
    first = await open_database(db_uri)
    version = await first.db.fetchval("SELECT version FROM relayforge_version")
    await first.portals.insert("slack", "C1", "!a:x", "general")
    await first.close()
    again = await open_database(db_uri)
    assert await again.db.fetchval("SELECT version FROM relayforge_version") == version
    assert (await again.portals.get("slack", "C1")).mxid == "!a:x"
    await again.close()


async def test_portals_are_keyed_by_network_and_remote_id(storage):
    await storage.portals.insert("slack", "C1", "!slack:x", "general")
    await storage.portals.insert("discord", "C1", "!discord:x", "general")
    assert (await storage.portals.get("slack", "C1")).mxid == "!slack:x"
    assert (await storage.portals.get_by_mxid("!discord:x")).network == "discord"
    assert await storage.portals.get("xmpp", "C1") is None
    with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
        await storage.portals.insert("slack", "C1", "!other:x", "again")


async def test_puppets_upsert_keeps_one_row(storage):
    await storage.puppets.upsert(Puppet("telegram", "42", "@telegram_42:x", "Ann"))
    await storage.puppets.upsert(Puppet("telegram", "42", "@telegram_42:x", "Ann B", "mxc://a"))
    puppet = await storage.puppets.get("telegram", "42")
    assert (puppet.displayname, puppet.avatar_url) == ("Ann B", "mxc://a")
    assert (await storage.puppets.get_by_mxid("@telegram_42:x")).remote_id == "42"


async def test_message_map_both_ways_and_duplicates_refused(storage):
    await storage.portals.insert("slack", "C1", "!room:x", "general")
    row = MessageRow(network="slack", remote_room="C1", remote_id="1700.01",
                     kind=MessageKind.MESSAGE, mxid="$ev1", room_mxid="!room:x",
                     sender_mxid="@slack_u:x")
    assert await storage.messages.insert(row) is True
    assert await storage.messages.insert(row) is False
    assert (await storage.messages.get_by_mxid("$ev1")).remote_id == "1700.01"
    found = await storage.messages.get_by_remote("slack", "C1", "1700.01")
    assert found.mxid == "$ev1" and found.kind is MessageKind.MESSAGE
    await storage.messages.delete("$ev1")
    assert await storage.messages.get_by_mxid("$ev1") is None


async def test_transactions_remembered_and_pruned(storage):
    assert not await storage.transactions.is_handled("t1")
    await storage.transactions.mark_handled("t1")
    await storage.transactions.mark_handled("t1")
    assert await storage.transactions.is_handled("t1")
    assert await storage.transactions.prune() == 0
    later = int(time.time() * 1000) + RETENTION_MS + 1000
    assert await storage.transactions.prune(now_ms=later) == 1
    assert not await storage.transactions.is_handled("t1")


async def test_management_rooms(storage):
    assert await storage.management_rooms.get("@a:x") is None
    await storage.management_rooms.set("@a:x", "!one:x")
    await storage.management_rooms.set("@a:x", "!two:x")
    assert await storage.management_rooms.get("@a:x") == "!two:x"
    await storage.management_rooms.delete("@a:x")
    assert await storage.management_rooms.get("@a:x") is None


async def test_sqlite_database_is_private_to_its_owner(tmp_path):
    # It holds wrapped data keys, accounts and the audit log: like the key file, 0600.
    path = tmp_path / "relayforge.db"
    storage = await open_database(f"sqlite:{path}")  # migrating writes every table
    await storage.close()
    written = [p for p in tmp_path.iterdir() if p.name.startswith("relayforge.db")]
    assert written and all(p.stat().st_mode & 0o777 == 0o600 for p in written), {
        p.name: oct(p.stat().st_mode & 0o777) for p in written}
