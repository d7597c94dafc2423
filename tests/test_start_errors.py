"""Start-up failures an admin can act on: one `Cannot start:` line naming the cause and the
key to change, exit code 2, and nothing written (no key file, no database)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from ruamel.yaml import YAML

from bridge.sandbox.synapse import free_port


def write_config(directory: Path, homeserver: str, port: int, **extra: dict) -> Path:
    config = {
        "homeserver": {"address": homeserver, "domain": "example.org", "wait_seconds": 1},
        "appservice": {"address": f"http://127.0.0.1:{port}", "hostname": "127.0.0.1",
                       "port": port, "as_token": "a" * 20, "hs_token": "h" * 20},
        "bridge": {"permissions": {"example.org": "user"}},
        "database": {"uri": f"sqlite:{directory / 'relayforge.db'}"},
        "vault": {"file": {"key_path": str(directory / "master.key")}},
        "audit": {"checkpoint_file": str(directory / "audit.checkpoint")},
        **extra,
    }
    path = directory / "config.yaml"
    with path.open("w") as stream:
        YAML().dump(config, stream)
    return path


def start(config: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bridge", "-c", str(config)],
                          capture_output=True, text=True, timeout=120)


def assert_nothing_written(directory: Path) -> None:
    assert sorted(p.name for p in directory.iterdir()) == ["config.yaml"]


def test_taken_port_is_named(tmp_path, homeserver):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = start(write_config(tmp_path, homeserver.synapse.url, port))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [f"Cannot start: appservice.port: 127.0.0.1:{port} is already in use (is "
                     "another bridge running?); stop it or choose another port"]
    assert_nothing_written(tmp_path)


def test_unreachable_homeserver_is_named_with_how_long_we_waited(tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"
    result = start(write_config(tmp_path, dead, free_port()))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"Cannot start: homeserver.address: {dead} did not answer within 1 s")
    assert "homeserver.wait_seconds" in lines[0]
    assert_nothing_written(tmp_path)


def test_missing_directory_is_named(tmp_path, homeserver):
    config = write_config(tmp_path, homeserver.synapse.url, free_port(),
                          vault={"file": {"key_path": str(tmp_path / "no" / "master.key")}})
    result = start(config)
    assert result.returncode == 2
    assert "vault.file.key_path: the directory" in result.stderr
    assert "does not exist" in result.stderr
    assert_nothing_written(tmp_path)


def test_unreachable_postgres_is_named_without_its_password(tmp_path, homeserver):
    uri = f"postgres://relayforge:s3cret-pw@127.0.0.1:{free_port()}/relayforge"
    config = write_config(tmp_path, homeserver.synapse.url, free_port(),
                          database={"uri": uri})
    result = start(config)
    assert result.returncode == 2
    assert result.stderr.startswith("Cannot start: database.uri: cannot connect to PostgreSQL")
    assert "s3cret-pw" not in result.stderr
    assert_nothing_written(tmp_path)
