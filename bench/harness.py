"""Everything the measurements run against: one real Synapse (the sandbox's), the bridge with
its registration made by its own `-g`, a bare probe appservice, and one Matrix person.

The setup mirrors tests/conftest.py without importing it: the benchmark must keep working
however the tests are reorganised.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from bridge.app import Bridge
from bridge.configure import load_config
from bridge.sandbox.synapse import LocalSynapse, free_port

from .arrivals import Arrivals
from .endpoints import NETWORK, BenchConnector, ProbeAppService
from .matrix import RawClient, SyncWatcher

SERVER_NAME = "localhost"
PROBE_LOCALPART = "benchprobe"
log = logging.getLogger("bench")


def write_bridge_config(directory: Path, hs_port: int, as_port: int, db_uri: str) -> Path:
    config = {
        "homeserver": {"address": f"http://127.0.0.1:{hs_port}", "domain": SERVER_NAME},
        "appservice": {"address": f"http://127.0.0.1:{as_port}", "hostname": "127.0.0.1",
                       "port": as_port, "id": "relayforge-bench", "bot_username": "rfbench"},
        "bridge": {"permissions": {"*": "relay", SERVER_NAME: "user"}},
        "database": {"uri": db_uri},
        "vault": {"file": {"key_path": str(directory / "master.key")}},
        "audit": {"checkpoint_file": str(directory / "audit.checkpoint")},
        # The benchmark's network: its ghosts must be inside the registration's namespaces.
        "networks": {NETWORK: {"username_template": "bench_{id}",
                               "displayname_template": "{displayname} (Bench)"}},
    }
    path = directory / "config.yaml"
    with path.open("w") as stream:
        YAML().dump(config, stream)
    return path


def generate_registration(config_path: Path, registration_path: Path) -> dict[str, Any]:
    """The registration Synapse loads is the one the bridge's own `-g` writes."""
    subprocess.run([sys.executable, "-m", "bridge", "-c", str(config_path), "-g",
                    "-r", str(registration_path)], check=True, capture_output=True)
    registration = YAML(typ="safe").load(registration_path.read_text())
    # Both baselines and the bridge would be throttled by Synapse otherwise, and the
    # comparison would measure the rate limiter.
    if registration.get("rate_limited") is not False:
        raise RuntimeError(f"{registration_path} does not set rate_limited: false")
    return registration


def write_probe_registration(path: Path, port: int, bridge: dict[str, Any]) -> dict[str, Any]:
    # Every setting of the bridge's own registration that changes what the homeserver does for
    # each transaction (ephemeral events, MSC3202's device lists and key counts) is the
    # probe's too: what differs between the two is only the appservice that receives them.
    same = {key: value for key, value in bridge.items()
            if key not in {"id", "url", "as_token", "hs_token", "sender_localpart", "namespaces"}}
    registration = {
        **same,
        "id": "relayforge-bench-probe",
        "url": f"http://127.0.0.1:{port}",
        "as_token": secrets.token_urlsafe(32),
        "hs_token": secrets.token_urlsafe(32),
        "sender_localpart": PROBE_LOCALPART,
        # The probe itself, and its "ghosts" (@benchprobe_...), which fill its room as a
        # remote sender's ghost does a portal.
        "namespaces": {"users": [{"regex": f"@{PROBE_LOCALPART}(_.+)?:{SERVER_NAME}",
                                  "exclusive": True}], "aliases": [], "rooms": []},
    }
    with path.open("w") as stream:
        YAML().dump(registration, stream)
    return registration


class Harness:
    def __init__(self, directory: Path, db_uri: str | None) -> None:
        self.directory = directory
        self.db_uri = db_uri or f"sqlite:{directory / 'relayforge.db'}"
        # Connector and probe share one record: their tags never overlap.
        self.delivered = Arrivals()
        self.connector = BenchConnector(self.delivered)
        self.synapse: LocalSynapse | None = None
        self.bridge: Bridge | None = None
        self.probe: ProbeAppService | None = None
        self.person: RawClient | None = None
        self.watcher: SyncWatcher | None = None
        self.as_token = ""
        self.probe_as_token = ""
        self.registration: dict[str, Any] = {}
        self._clients: list[RawClient] = []

    @property
    def hs_url(self) -> str:
        assert self.synapse is not None
        return self.synapse.url

    @property
    def probe_mxid(self) -> str:
        return f"@{PROBE_LOCALPART}:{SERVER_NAME}"

    async def start(self) -> None:
        hs_port, as_port, probe_port = free_port(), free_port(), free_port()
        config_path = write_bridge_config(self.directory, hs_port, as_port, self.db_uri)
        registration_path = self.directory / "registration.yaml"
        self.registration = generate_registration(config_path, registration_path)
        self.as_token = self.registration["as_token"]
        probe_path = self.directory / "probe-registration.yaml"
        probe_registration = write_probe_registration(probe_path, probe_port, self.registration)
        self.probe_as_token = probe_registration["as_token"]

        self.synapse = LocalSynapse(self.directory / "synapse", hs_port, SERVER_NAME,
                                    [registration_path, probe_path])
        log.warning("Starting Synapse (the first start takes about 30 s)")
        await asyncio.to_thread(self.synapse.start)

        self.probe = ProbeAppService(probe_registration["hs_token"], self.delivered)
        await self.probe.start("127.0.0.1", probe_port)
        self.bridge = Bridge(load_config(str(config_path)), [self.connector])
        await self.bridge.start()

        # The person: created through the admin API and an admin, so they can lift their own
        # message rate limit (the sandbox config raises the limits already; this makes the
        # benchmark independent of that).
        name = f"benchperson{secrets.token_hex(3)}"
        info = await asyncio.to_thread(self.synapse.register_user, name,
                                       secrets.token_urlsafe(12), True)
        # Enough connections for a whole burst to be in flight at once.
        self.person = self.client(info["access_token"], connections=1000)
        await self.person.whoami()
        await self.person.unlimit_messages(self.person.user_id or "")
        self.watcher = SyncWatcher(self.client(info["access_token"]))
        await self.watcher.start()

    def client(self, token: str, user_id: str | None = None,
               connections: int = 100) -> RawClient:
        made = RawClient(self.hs_url, token, user_id, connections)
        self._clients.append(made)
        return made

    def ghost_client(self, localpart_id: str) -> RawClient:
        """An appservice user in the bridge's own ghost namespace: the raw baseline sends as
        one of these, with the bridge's as_token, exactly as the bridge's ghosts do."""
        return self.client(self.as_token, f"@bench_{localpart_id}:{SERVER_NAME}")

    async def stop(self) -> None:
        if self.watcher:
            await self.watcher.stop()
        if self.bridge:
            await self.bridge.stop()
        if self.probe:
            await self.probe.stop()
        for client in self._clients:
            await client.close()
        if self.synapse:
            await asyncio.to_thread(self.synapse.stop)

    def synapse_log_tail(self) -> str:
        return self.synapse.log_tail() if self.synapse else ""
