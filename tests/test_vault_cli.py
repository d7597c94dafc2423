"""`vault status`, `vault rotate` and HSM start-up errors, through the command line."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from bridge.db import open_database
from bridge.security.setup import open_security

from .support.configs import admin_config

ROOT = Path(__file__).resolve().parent.parent


async def cli(config_path: str, *args: str, env: dict | None = None
              ) -> subprocess.CompletedProcess:
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "bridge", "-c", config_path, *args],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )


async def seal_some(config, count: int = 3) -> None:
    storage = await open_database(config["database.uri"])
    security = await open_security(config, storage)
    for i in range(count):
        await security.vault.seal(f"profile-{i}", "slack:U1", "refresh_token", f"token-{i}")
    await security.close()
    await storage.close()


async def open_all(config, count: int = 3) -> list[str]:
    storage = await open_database(config["database.uri"])
    security = await open_security(config, storage)
    try:
        return [await security.vault.open_text(f"profile-{i}", "slack:U1", "refresh_token")
                for i in range(count)]
    finally:
        await security.close()
        await storage.close()


async def test_status_and_rotate(tmp_path, db_uri):
    config = admin_config(tmp_path, db_uri)
    await seal_some(config)
    status = await cli(config.path, "vault", "status")
    assert status.returncode == 0, status.stderr
    # Three profiles plus the bridge's own keys (audit MAC key, signing key).
    assert "master key v1: current, wraps 4 data key(s)" in status.stdout
    assert "file (a file, not hardware)" in status.stdout

    rotated = await cli(config.path, "vault", "rotate")
    assert rotated.returncode == 0, rotated.stderr
    assert "Rotated to master key version 2: 4 data keys rewrapped." in rotated.stdout
    # Progress: how many of how many, a line per step of the work.
    assert rotated.stdout.startswith("Rewrapping 4 data keys under a new master key...\n")
    assert "  1 of 4 data keys rewrapped (25%), about" in rotated.stdout
    assert "  4 of 4 data keys rewrapped (100%)\n" in rotated.stdout
    status = await cli(config.path, "vault", "status")
    assert "master key v1: retired, wraps 0 data key(s)" in status.stdout
    assert "master key v2: current, wraps 4 data key(s)" in status.stdout
    assert await open_all(config) == ["token-0", "token-1", "token-2"]

    verify = await cli(config.path, "audit", "verify")
    assert verify.returncode == 0, verify.stderr
    records = int(verify.stdout.split("Checking ", 1)[1].split(" ", 1)[0])
    assert f"  {records} of {records} records checked (100%)\n" in verify.stdout
    storage = await open_database(config["database.uri"])
    [record] = await storage.audit_log.latest(1)
    await storage.close()
    assert record.event_type == "key_rotation"


async def test_pkcs11_start_up_with_pin_from_env_and_a_clear_error_for_a_wrong_pin(
    tmp_path, db_uri, softhsm
):
    pkcs11 = {"module": softhsm.module, "token_label": softhsm.label,
              "key_label": f"cli-{tmp_path.name[-8:]}", "pin_env": "TEST_HSM_PIN"}
    config = admin_config(tmp_path, db_uri, vault={"provider": "pkcs11", "pkcs11": pkcs11})
    ok = await cli(config.path, "vault", "status", env={"TEST_HSM_PIN": softhsm.pin})
    assert ok.returncode == 0, ok.stderr
    assert "Key provider: pkcs11 (hardware (PKCS#11))" in ok.stdout

    wrong = await cli(config.path, "vault", "status", env={"TEST_HSM_PIN": "999999"})
    assert wrong.returncode == 2
    assert wrong.stderr.strip() == (f"Cannot vault status: vault: the HSM token "
                                    f"{softhsm.label!r} refused the PIN from $TEST_HSM_PIN: "
                                    "check it")

    missing = await cli(config.path, "vault", "status", env={"TEST_HSM_PIN": ""})
    assert missing.returncode == 2
    assert "the HSM PIN is missing; set the environment variable TEST_HSM_PIN" in missing.stderr

    # The bridge itself refuses to start the same way.
    start = await cli(config.path, env={"TEST_HSM_PIN": "999999"})
    assert start.returncode == 2
    assert "refused the PIN from $TEST_HSM_PIN" in start.stderr
