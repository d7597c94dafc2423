"""The backfill's records on SQLite and on PostgreSQL: the portals a pattern rule covers (by
its own id or by a name the pattern matches), with the pattern's characters taken as written
by the database and only the person's own direct chats among them; the direct chats caught
up at start, with their personas."""

from __future__ import annotations

import pytest

from bridge.db import open_database
from bridge.db.direct_portals import DirectPortals
from bridge.db.persona import Persona, PersonaStatus
from bridge.db.profile import Profile


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


async def test_the_direct_chats_caught_up_at_start(storage):
    """Read in one query with their personas: only rooms that are direct chats, have a
    Matrix room and belong to a persona that is still there and receives, oldest first."""
    account = await storage.accounts.create("acct-1")
    profile = Profile("prof-1", account.id, "Jobb", None)
    assert await storage.profiles.add(profile)
    for persona_id, status in (("per-active", PersonaStatus.ACTIVE),
                               ("per-reading", PersonaStatus.READ_ONLY),
                               ("per-paused", PersonaStatus.PAUSED),
                               ("per-reauth", PersonaStatus.NEEDS_REAUTH),
                               ("per-revoked", PersonaStatus.REVOKED)):
        assert await storage.personas.add(Persona(
            persona_id, profile.id, profile.id, "slack", f"T1/{persona_id}", None, None, [],
            None, status))
    portals = storage.portals
    await portals.insert("slack", "T1/D3", "!d3:x", "Ann", receiver="per-active")
    await portals.insert("xmpp", "bob@x", "!d1:x", "Bob", receiver="per-reading")
    await portals.insert("slack", "T1/D2", "!d2:x", "Cy", receiver="per-active")
    await portals.insert("slack", "T1/D4", "!d4:x", "Paused", receiver="per-paused")
    await portals.insert("slack", "T1/D5", "!d5:x", "Reauth", receiver="per-reauth")
    await portals.insert("slack", "T1/D6", "!d6:x", "Revoked", receiver="per-revoked")
    await portals.insert("slack", "T1/D7", "!d7:x", "Unlinked", receiver="per-gone")
    await portals.insert("slack", "T1/D8", None, "No room yet", receiver="per-active")
    await portals.insert("slack", "T1/C1", "!c1:x", "#mapped", receiver="per-active",
                         rule_id="rule-a")
    await portals.insert("slack", "T1/C2", "!c2:x", "#shared")
    # Oldest first, then by remote id: D3 is the oldest; D2 and bob@x share a time.
    for remote_id, created_at in (("T1/D3", 1000), ("bob@x", 2000), ("T1/D2", 2000)):
        await storage.db.execute("UPDATE portal SET created_at=$2 WHERE remote_id=$1",
                                 remote_id, created_at)

    found = await DirectPortals(storage.db).receiving(
        (PersonaStatus.ACTIVE, PersonaStatus.READ_ONLY))
    assert [(p.network, p.remote_id, p.mxid, p.name, p.receiver, persona_id)
            for p, persona_id in found] == [
        ("slack", "T1/D3", "!d3:x", "Ann", "per-active", "per-active"),
        ("slack", "T1/D2", "!d2:x", "Cy", "per-active", "per-active"),
        ("xmpp", "bob@x", "!d1:x", "Bob", "per-reading", "per-reading")]
    assert [p.created_at for p, _ in found] == [1000, 2000, 2000]
    assert all(p.rule_id is None for p, _ in found)
    assert await DirectPortals(storage.db).receiving(()) == []
    paused = await DirectPortals(storage.db).receiving([PersonaStatus.PAUSED])
    assert [(p.remote_id, persona_id) for p, persona_id in paused] == [("T1/D4", "per-paused")]
