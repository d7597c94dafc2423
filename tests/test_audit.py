"""The audit log: an unbroken chain under concurrency, and every kind of tampering caught."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.audit import AuditEvent
from bridge.db import open_database
from bridge.security.setup import open_security

from .support.configs import admin_config

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
async def config(tmp_path, db_uri):
    return admin_config(tmp_path, db_uri)


@pytest.fixture
async def security(config):
    storage = await open_database(config["database.uri"])
    security = await open_security(config, storage)
    yield security
    await security.close()
    await storage.close()


async def write_records(security, count: int = 8) -> None:
    events = [AuditEvent.LINK, AuditEvent.TOKEN_REFRESH, AuditEvent.IMPERSONATED_SEND,
              AuditEvent.PAUSE, AuditEvent.RESUME, AuditEvent.REVOKE, AuditEvent.UNLINK,
              AuditEvent.ADMIN_ACTION]
    for i in range(count):
        await security.audit.append(events[i % len(events)], actor="@alice:localhost",
                                    account="acct-1", profile="Jobb", persona="slack:U1",
                                    details={"n": i, "network": "slack"})
    await security.checkpoints.write_head()


async def verify_cli(config) -> subprocess.CompletedProcess:
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "bridge", "-c", config.path, "audit", "verify"],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


async def test_untouched_log_verifies(security, config):
    await write_records(security)
    assert await security.audit.verify() == []
    result = await verify_cli(config)
    assert result.returncode == 0, result.stderr
    # Progress lines first (how many of how many), then the verdict.
    lines = result.stdout.splitlines()
    assert lines[0] == "Checking 8 audit records..."
    assert lines[-1].startswith("OK: 8 records, chain unbroken, and reaches checkpoint")


TAMPERING = {
    "changed": (["UPDATE audit_log SET details='{\"n\":99}' WHERE seq=4"],
                "record 4 was changed: its MAC does not match"),
    "deleted": (["DELETE FROM audit_log WHERE seq=4"],
                "record 4 is missing: records 4-4 were deleted"),
    "inserted": ([*(f"UPDATE audit_log SET seq=seq+1 WHERE seq={s}" for s in range(8, 3, -1)),
                  "INSERT INTO audit_log SELECT 4, ts, actor, account, profile, persona, "
                  "'link', details, mac, mac, NULL FROM audit_log WHERE seq=3"],
                 "record 4 was changed: its MAC does not match"),
    "reordered": (["UPDATE audit_log SET seq=-5 WHERE seq=5",
                   "UPDATE audit_log SET seq=5 WHERE seq=4",
                   "UPDATE audit_log SET seq=4 WHERE seq=-5"],
                  "record 4 was changed: its MAC does not match"),
    "truncated": (["DELETE FROM audit_log WHERE seq >= 7"],
                  "the log ends at record 6 but a checkpoint saw record 8: records were "
                  "removed from the end"),
}


@pytest.mark.parametrize("kind", list(TAMPERING))
async def test_tampering_is_detected_and_named(security, config, kind):
    await write_records(security)
    statements, expected = TAMPERING[kind]
    for statement in statements:
        await security.audit.store.db.execute(statement)
    result = await verify_cli(config)
    assert result.returncode == 1
    failures = [line for line in result.stderr.splitlines() if line.startswith("FAILED")]
    assert failures[0] == f"FAILED: {expected}"


async def test_altered_checkpoint_is_detected(security, config):
    await write_records(security)
    path = Path(config["audit.checkpoint_file"])
    path.write_text(path.read_text().replace('"seq": 8', '"seq": 6'))
    result = await verify_cli(config)
    assert result.returncode == 1
    assert "was altered: its signature does not match" in result.stderr


async def test_fifty_concurrent_writers_make_one_chain(config):
    # Two independent connection pools on one database, as two bridge processes would have.
    first = await open_database(config["database.uri"], max_size=10)
    second = await open_database(config["database.uri"], max_size=10)
    security_a = await open_security(config, first)
    security_b = await open_security(config, second)
    try:
        await asyncio.gather(*(
            (security_a if i % 2 else security_b).audit.append(
                AuditEvent.IMPERSONATED_SEND, actor=f"@u{i}:localhost", details={"i": i})
            for i in range(50)
        ))
        assert await security_a.audit.verify() == []
        seqs = [row["seq"] for row in await first.db.fetch("SELECT seq FROM audit_log")]
        assert sorted(seqs) == list(range(1, 51))
        details = {row["details"] for row in await first.db.fetch("SELECT details FROM audit_log")}
        assert len(details) == 50  # every write landed, none twice
    finally:
        for security, storage in ((security_a, first), (security_b, second)):
            await security.close()
            await storage.close()


async def test_secrets_are_refused_in_details(security):
    for name in ("access_token", "password", "client_secret"):
        with pytest.raises(ValueError, match="looks like a secret"):
            await security.audit.append(AuditEvent.LINK, details={name: "x"})
    assert await security.audit.latest(10) == []
