"""What can be checked of the Docker files without a Docker engine: the build context keeps
secrets out, the image runs unprivileged with the right entry point, and the compose file's
paths and overrides are ones the bridge understands."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

from ruamel.yaml import YAML

from bridge.config import Config

ROOT = Path(__file__).resolve().parent.parent


def ignore_patterns() -> list[tuple[bool, str]]:
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            rules.append((line.startswith("!"), line.lstrip("!").rstrip("/")))
    return rules


def _matches(pattern: str, path: str) -> bool:
    # Docker's rules: a pattern matches the path or one of its parent directories; "**" spans
    # any number of directories.
    parts = path.split("/")
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    regex = re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*")
    regex = regex.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
    return any(re.fullmatch(regex, c) for c in candidates) or fnmatch.fnmatch(path, pattern)


def in_context(path: str) -> bool:
    """Whether `docker build` would send `path` (relative to the repository root)."""
    included = True
    for negated, pattern in ignore_patterns():
        if _matches(pattern, path):
            included = negated
    return included


def test_build_context_holds_the_package_and_no_secrets():
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    copied = [src for line in dockerfile.splitlines() if line.startswith("COPY ")
              for src in line.split()[1:-1]]
    assert copied, "the Dockerfile copies nothing?"
    for source in copied:
        assert in_context(source.rstrip("/") + ("/__init__.py" if source.endswith("bridge")
                                                else "")), source
    assert in_context("bridge/networks/slack/connector.py")
    for secret in [".venv/bin/python", "sandbox/config.yaml", "sandbox/demo-password.txt",
                   "relayforge.db", "relayforge.db-wal", "relayforge-master.key",
                   "config.yaml", "registration.yaml", "docker/relayforge/config.yaml",
                   "docker/.env", "bridge/__pycache__/app.cpython-311.pyc",
                   "test-artifacts/signin.png", "tests/oidc/node_modules/x.js", ".git/config"]:
        assert not in_context(secret), secret


def test_image_runs_unprivileged_with_the_bridge_entry_point():
    lines = (ROOT / "docker" / "Dockerfile").read_text().splitlines()
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users == ["relayforge"]
    assert any("--uid 1337" in line for line in lines)
    assert 'ENTRYPOINT ["python", "-m", "bridge"]' in lines
    assert 'CMD ["-c", "/config/config.yaml"]' in lines
    base = [line for line in lines if line.startswith("FROM ")]
    assert base and ":latest" not in base[0] and re.search(r":\d+\.\d+", base[0])
    health = next(line for line in lines if "urlopen" in line)
    assert "/_matrix/mau/live" in health


def test_compose_file_matches_the_config(tmp_path):
    compose = YAML(typ="safe").load((ROOT / "docker" / "docker-compose.yml").read_text())
    services = compose["services"]
    for name, service in services.items():
        if "image" in service:
            assert not service["image"].endswith(":latest") and ":" in service["image"], name
    bridge = services["relayforge"]
    assert bridge["build"]["dockerfile"] == "docker/Dockerfile"
    assert "/config" in [v.split(":")[1] for v in bridge["volumes"]]
    # The synapse container reads the registration where the bridge's -g wrote it.
    shared = {v.split(":")[0] for v in bridge["volumes"]} & {
        v.split(":")[0] for v in services["synapse"]["volumes"]}
    assert shared == {"./relayforge"}
    # Every override names a real config key and gives a value the bridge accepts.
    environ = {k: str(v).replace("${RELAYFORGE_DB_PASSWORD}", "secret")
               for k, v in bridge["environment"].items()}
    config_path = tmp_path / "config.yaml"
    config_path.write_text((ROOT / "config.example.yaml").read_text())
    config = Config(str(config_path), environ)
    config.load()
    config.validate(for_run=False)
    assert config["database.uri"] == "postgres://relayforge:secret@postgres/relayforge"
    assert config["homeserver.address"] == "http://synapse:8008"
    assert config["appservice.address"] == "http://relayforge:29340"
    assert config["appservice.hostname"] == "0.0.0.0"
    assert str(config["appservice.port"]) in (ROOT / "docker" / "Dockerfile").read_text()
