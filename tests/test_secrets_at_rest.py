"""No plaintext secret in the database file, a pg_dump or the log output."""

from __future__ import annotations

import asyncio
import base64
import logging
import shutil
import subprocess
from pathlib import Path

from .support.servers import unavailable

SECRETS = {
    ("Jobb", "slack:U1", "refresh_token"): "xoxe-1-REFRESH-7f3a9c1b2d",
    ("Jobb", "slack:U1", "access_token"): "xoxp-ACCESS-55aa66bb77cc",
    ("Privat", "telegram:42", "session"): "1BVtsOKABu-TELEGRAM-SESSION-e4f5",
    ("Privat", "xmpp:me@example.org", "password"): "correct horse battery staple 93",
}


def forms(secret: str) -> list[bytes]:
    raw = secret.encode()
    return [raw, base64.b64encode(raw), base64.urlsafe_b64encode(raw), raw.hex().encode()]


async def database_bytes(db_uri: str) -> bytes:
    if db_uri.startswith("sqlite:"):
        path = Path(db_uri.removeprefix("sqlite:"))
        files = [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]
        return b"".join(f.read_bytes() for f in files if f.exists())
    pg_dump = shutil.which("pg_dump")
    if pg_dump is None:
        unavailable("pg_dump is not installed (Debian package postgresql-client)")
    result = await asyncio.to_thread(subprocess.run, [pg_dump, "--no-owner", db_uri],
                                     capture_output=True, check=True)
    assert b"vault_secret" in result.stdout  # the dump really has the table
    return result.stdout


async def test_linked_credentials_are_only_stored_sealed(start_bridge, db_uri, caplog):
    caplog.set_level(logging.DEBUG)
    bridge = await start_bridge()
    vault = bridge.security.vault
    for (profile, persona, field), secret in SECRETS.items():
        await vault.seal(profile, persona, field, secret)
    for (profile, persona, field), secret in SECRETS.items():
        assert await vault.open_text(profile, persona, field) == secret
    await bridge.stop()

    stored = await database_bytes(db_uri)
    for secret in SECRETS.values():
        for form in forms(secret):
            assert form not in stored, f"{secret!r} is readable in the database"
            assert form.decode() not in caplog.text, f"{secret!r} is in the log output"
    assert caplog.text  # the log really was captured
