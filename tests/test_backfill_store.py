"""The backfill's records on SQLite and on PostgreSQL: the portals a pattern rule covers (by
its own id or by a name the pattern matches), with the pattern's characters taken as written
by the database and only the person's own direct chats among them."""

from __future__ import annotations

import pytest

from bridge.db import open_database


@pytest.fixture
async def storage(db_uri):
    storage = await open_database(db_uri)
    yield storage
    await storage.close()


async def test_the_portals_a_pattern_rule_covers(storage):
    portals = storage.portals
    await portals.insert("slack", "T1/C1", "!c1:x", "#general")
    await portals.insert("slack", "T1/C2", "!c2:x", "#random", rule_id="rule-b")
    await portals.insert("slack", "T2/C3", "!c3:x", "#elsewhere")
    # "_" and "%" are LIKE's wildcards: here they are plain characters of the ids.
    await portals.insert("slack", "T_1/C4", "!c4:x", "#underscore")
    await portals.insert("slack", "T1%/C5", "!c5:x", "#percent")
    await portals.insert("slack", "T1/D1", "!d1:x", "Ann", receiver="persona-a")
    await portals.insert("slack", "T1/D2", "!d2:x", "Bob", receiver="persona-b")
    await portals.insert("xmpp", "T1/C6", "!c6:x", "other network")
    covered = storage.backfills.pattern_portals
    assert await covered("slack", "T1/*", "rule-a", "persona-a") == [
        ("T1/C1", "#general"), ("T1/C2", "#random"), ("T1/D1", "Ann")]
    # Brought in by the rule itself, though the pattern no longer matches its id.
    assert await covered("slack", "T9/*", "rule-b", "persona-a") == [("T1/C2", "#random")]
    assert await covered("slack", "T_1/*", "rule-a", "persona-a") == [("T_1/C4", "#underscore")]
    assert await covered("slack", "T1%/*", "rule-a", "persona-a") == [("T1%/C5", "#percent")]
    assert await covered("slack", "*/C3", "rule-a", "persona-a") == [("T2/C3", "#elsewhere")]
    assert await covered("slack", "t1/*", "rule-a", "persona-a") == []  # case counts
