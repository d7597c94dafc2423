"""The repository holds no file the bridge writes at run time: databases, keys, checkpoints."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNTIME = re.compile(
    r"(\.db|\.db-wal|\.db-shm|\.db-journal|\.sqlite|\.key|\.checkpoint|\.pem)$"
    r"|^(sandbox|test-artifacts)/|^(config|registration)\.yaml$"
)


def tracked_runtime_files(listing: str) -> list[str]:
    return [name for name in listing.splitlines() if RUNTIME.search(name)]


def test_no_runtime_file_is_tracked():
    listing = subprocess.run(["git", "-C", str(ROOT), "ls-files"], capture_output=True,
                             text=True, check=True).stdout
    assert listing, "git ls-files listed nothing: not run from the repository?"
    assert tracked_runtime_files(listing) == []


def test_the_check_sees_what_the_bridge_writes():
    # What the bridge writes with the default config: the check must name each of them.
    written = ["relayforge.db", "relayforge.db-wal", "relayforge.db-shm",
               "relayforge-master.key", "relayforge-audit.checkpoint", "sandbox/hs/homeserver.db",
               "config.yaml", "registration.yaml"]
    assert tracked_runtime_files("\n".join([*written, "config.example.yaml",
                                            "bridge/security/vault/file_provider.py"])) == written
