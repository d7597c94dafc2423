"""The bot's pending link questions, kept in the database so any worker reads the answer:
taken once, bound to the person asked, replaced by a newer question, and the flow's id (a
capability) never stored in clear. On SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from bridge.bot.link_prompts import KIND, LinkPrompts
from bridge.db import open_database
from bridge.security.vault import Vault
from bridge.security.vault.file_provider import FileKeyProvider

ALICE, BOB = "@alice:rf.test", "@bob:rf.test"


@pytest.fixture
async def storage(db_uri):
    storage = await open_database(db_uri)
    yield storage
    await storage.close()


@pytest.fixture
async def vault(storage, tmp_path):
    vault = Vault(FileKeyProvider(str(tmp_path / "master.key")), storage.vault_keys,
                  storage.vault_secrets)
    await vault.start()
    yield vault
    vault.stop()


async def test_a_question_is_answered_once_by_whoever_reads_it(storage, vault):
    asked, other_worker = LinkPrompts(storage.one_time, vault), LinkPrompts(storage.one_time,
                                                                            vault)
    await asked.ask(ALICE, "acc_1", "flow-capability-1", "password", True, 300)
    assert await other_worker.take(BOB) is None  # bound to the person asked
    prompt = await other_worker.take(ALICE)
    assert prompt is not None
    assert (prompt.flow_id, prompt.field, prompt.secret, prompt.expired) == (
        "flow-capability-1", "password", True, False)
    assert await asked.take(ALICE) is None  # spent: her next message is a command again


async def test_a_newer_question_replaces_the_one_before(storage, vault):
    prompts = LinkPrompts(storage.one_time, vault)
    await prompts.ask(ALICE, "acc_1", "flow-1", "password", True, 300)
    await prompts.ask(ALICE, "acc_1", "flow-2", "consent", False, 300)
    prompt = await prompts.take(ALICE)
    assert prompt is not None and (prompt.flow_id, prompt.field) == ("flow-2", "consent")
    assert await prompts.take(ALICE) is None
    # Asked again after it was answered: a question again.
    await prompts.ask(ALICE, "acc_1", "flow-3", "password", True, 300)
    prompt = await prompts.take(ALICE)
    assert prompt is not None and prompt.flow_id == "flow-3"


async def test_an_answer_after_the_time_is_still_taken_as_one(storage, vault):
    prompts = LinkPrompts(storage.one_time, vault)
    await prompts.ask(ALICE, "acc_1", "flow-1", "password", True, -1)  # already past
    prompt = await prompts.take(ALICE)
    # Taken (so a late password is redacted, not read as a command), and said too late.
    assert prompt is not None and prompt.expired and prompt.secret


async def test_the_flow_id_is_stored_only_sealed_for_the_person_asked(storage, vault):
    prompts = LinkPrompts(storage.one_time, vault)
    await prompts.ask(ALICE, "acc_1", "flow-capability-secret", "password", True, 300)
    rows = await storage.db.fetch("SELECT hash, payload FROM one_time_secret WHERE kind=$1",
                                  KIND)
    assert len(rows) == 1
    assert "flow-capability-secret" not in rows[0]["hash"] + rows[0]["payload"]
    # Alice's sealed flow copied into a question for bob does not open for him.
    await prompts.ask(BOB, "acc_2", "bobs-flow", "password", True, 300)
    await storage.db.execute(
        "UPDATE one_time_secret SET payload=$1 WHERE kind=$2 AND mxid=$3",
        rows[0]["payload"], KIND, BOB)
    stolen = await prompts.take(BOB)
    assert stolen is not None and stolen.flow_id == "" and stolen.expired
