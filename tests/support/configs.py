"""Config files for tests that run the bridge's admin commands (no homeserver needed)."""

from __future__ import annotations

from pathlib import Path

from ruamel.yaml import YAML

from bridge.config import Config
from bridge.configure import load_config


def admin_config(directory: Path, db_uri: str, **sections: dict) -> Config:
    data = {
        "homeserver": {"address": "http://127.0.0.1:1", "domain": "localhost"},
        "appservice": {"address": "http://127.0.0.1:2", "as_token": "a", "hs_token": "h"},
        "bridge": {"permissions": {"*": "user"}},
        "database": {"uri": db_uri},
        "vault": {"file": {"key_path": str(directory / "master.key")}},
        "audit": {"checkpoint_file": str(directory / "audit.checkpoint"),
                  "checkpoint_every": 1000},
        **sections,
    }
    path = directory / "admin-config.yaml"
    with path.open("w") as stream:
        YAML().dump(data, stream)
    return load_config(str(path), environ={})
