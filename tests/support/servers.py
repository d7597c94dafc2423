"""Finding or starting the real servers the tests need (PostgreSQL; Synapse is in conftest).

With CI=true a missing server fails the test instead of skipping it.
"""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import asyncpg
import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(reason: str) -> None:
    """Skip locally, fail in CI: a server the suite needs must be there in CI."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: a missing server is a failure)", pytrace=False)
    pytest.skip(reason)


async def _can_connect(dsn: str) -> bool:
    try:
        conn = await asyncpg.connect(dsn, timeout=3)
    except (TimeoutError, OSError, asyncpg.PostgresError):
        return False
    await conn.close()
    return True


class PostgresServer:
    """The machine's PostgreSQL if one answers, else a throwaway cluster from initdb."""

    def __init__(self) -> None:
        self.admin_dsn: str | None = None
        self._cluster: Path | None = None

    def start(self) -> str | None:
        explicit = os.environ.get("RELAYFORGE_TEST_POSTGRES")
        candidates = [explicit] if explicit else [
            "postgres://postgres@127.0.0.1:5432/postgres",
            "postgres://root@127.0.0.1:5432/postgres",
        ]
        for dsn in candidates:
            if asyncio.run(_can_connect(dsn)):
                self.admin_dsn = dsn
                return dsn
        return self._start_cluster()

    def _start_cluster(self) -> str | None:
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
        initdb = shutil.which("initdb") or (f"{bins[-1]}/initdb" if bins else None)
        if not initdb or not os.path.exists(initdb):
            return None
        pg_ctl = str(Path(initdb).with_name("pg_ctl"))
        self._cluster = Path(tempfile.mkdtemp(prefix="relayforge-pg-"))
        # initdb refuses to run as root; Debian's package creates a postgres user for this.
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if prefix:
            shutil.chown(self._cluster, "postgres")
        port = 55432
        subprocess.run([*prefix, initdb, "-D", str(self._cluster / "data"), "-A", "trust",
                        "-U", "postgres"], check=True, capture_output=True)
        subprocess.run([*prefix, pg_ctl, "-D", str(self._cluster / "data"), "-w", "-l",
                        str(self._cluster / "log"), "-o",
                        f"-p {port} -k {self._cluster} -c listen_addresses=127.0.0.1", "start"],
                       check=True, capture_output=True)
        self.admin_dsn = f"postgres://postgres@127.0.0.1:{port}/postgres"
        return self.admin_dsn

    def stop(self) -> None:
        if self._cluster is None:
            return
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        pg_ctl = shutil.which("pg_ctl") or "pg_ctl"
        subprocess.run([*prefix, pg_ctl, "-D", str(self._cluster / "data"), "-m", "fast",
                        "stop"], capture_output=True)
        shutil.rmtree(self._cluster, ignore_errors=True)

    async def create_database(self, name: str) -> str:
        assert self.admin_dsn
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return self.admin_dsn.rsplit("/", 1)[0] + f"/{name}"

    async def drop_database(self, name: str) -> None:
        assert self.admin_dsn
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()
