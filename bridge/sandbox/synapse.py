"""A throwaway local Synapse: for the sandbox and for the end-to-end tests.

Synapse comes from the `sandbox` extra. Its generated config is kept as it is; our settings go in
a second file that overrides top-level keys (loopback listener, high rate limits, the bridge's
registration), so a second run reuses the same homeserver, users and rooms.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

_GENEROUS = {"per_second": 1000, "burst_count": 10000}


def _overrides(port: int, registrations: list[str]) -> dict[str, Any]:
    return {
        "listeners": [{
            "port": port,
            "bind_addresses": ["127.0.0.1"],
            "type": "http",
            "tls": False,
            "x_forwarded": False,
            # "openid": the bridge verifies Matrix OpenID tokens for its provisioning API.
            "resources": [{"names": ["client", "openid"], "compress": False}],
        }],
        "trusted_key_servers": [],
        "suppress_key_server_warning": True,
        "app_service_config_files": registrations,
        "presence": {"enabled": False},
        "bcrypt_rounds": 4,
        "enable_registration": False,
        "rc_message": _GENEROUS,
        "rc_registration": _GENEROUS,
        "rc_login": {"address": _GENEROUS, "account": _GENEROUS, "failed_attempts": _GENEROUS},
        "rc_joins": {"local": _GENEROUS, "remote": _GENEROUS},
        "rc_joins_per_room": _GENEROUS,
        "rc_invites": {"per_room": _GENEROUS, "per_user": _GENEROUS, "per_issuer": _GENEROUS},
        "rc_room_creation": _GENEROUS,
        "rc_profile": _GENEROUS,
        "rc_presence": {"per_user": _GENEROUS},
        "rc_admin_redaction": _GENEROUS,
        "rc_media_create": _GENEROUS,
        # End-to-bridge encryption: the bot's to-device messages, device lists and key counts
        # in the appservice transactions (the registration asks for them, org.matrix.msc3202).
        "experimental_features": {"msc2409_to_device_messages_enabled": True,
                                  "msc3202_transaction_extensions": True},
    }


class SynapseError(RuntimeError):
    pass


class LocalSynapse:
    def __init__(self, directory: Path, port: int, server_name: str = "localhost",
                 registrations: list[Path] | None = None) -> None:
        self.directory = directory.resolve()
        self.port = port
        self.server_name = server_name
        self.registrations = [str(p.resolve()) for p in registrations or []]
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.directory / "homeserver.yaml"

    @property
    def log_path(self) -> Path:
        return self.directory / "synapse-stdout.log"

    def prepare(self) -> None:
        """Generate the homeserver config on first use; always rewrite our overrides."""
        self.directory.mkdir(parents=True, exist_ok=True)
        if not self.config_path.exists():
            subprocess.run(
                [sys.executable, "-m", "synapse.app.homeserver",
                 "--server-name", self.server_name, "--config-path", str(self.config_path),
                 "--data-directory", str(self.directory),
                 "--generate-config", "--report-stats=no"],
                check=True, cwd=self.directory, capture_output=True,
            )
        overrides = self.directory / "overrides.yaml"
        with overrides.open("w") as stream:
            YAML().dump(_overrides(self.port, self.registrations), stream)

    def start(self, timeout: float = 90.0) -> None:
        self.prepare()
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "synapse.app.homeserver",
             "-c", str(self.config_path), "-c", str(self.directory / "overrides.yaml")],
            cwd=self.directory, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SynapseError(f"Synapse exited at start-up:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/_matrix/client/versions", timeout=2):
                    return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise SynapseError(f"Synapse did not answer within {timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        text = ""
        for path in (self.log_path, self.directory / "homeserver.log"):
            if path.exists():
                text += "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) + "\n"
        return text

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def _shared_secret(self) -> str:
        config = YAML(typ="safe").load(self.config_path.read_text())
        return config["registration_shared_secret"]

    def register_user(self, username: str, password: str, admin: bool = False
                      ) -> dict[str, Any]:
        """Create a user through the shared-secret admin API (not rate limited)."""
        endpoint = f"{self.url}/_synapse/admin/v1/register"
        with urllib.request.urlopen(endpoint, timeout=10) as response:
            nonce = json.load(response)["nonce"]
        mac = hmac.new(self._shared_secret().encode(), digestmod=hashlib.sha1)
        mac.update(b"\x00".join([nonce.encode(), username.encode(), password.encode(),
                                 b"admin" if admin else b"notadmin"]))
        body = json.dumps({"nonce": nonce, "username": username, "password": password,
                           "admin": admin, "mac": mac.hexdigest()}).encode()
        request = urllib.request.Request(endpoint, data=body,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.load(response)
        except urllib.error.HTTPError as e:
            raise SynapseError(f"registering {username} failed: {e.read().decode()}") from e


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]

