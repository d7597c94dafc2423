"""`python -m bridge sandbox`: a local homeserver and the bridge, ready to talk to.

The first run writes everything under the sandbox directory (default ./sandbox): Synapse's
config and database, the bridge's config (SQLite), the registration and a demo user. Later runs
reuse all of it. Ctrl-C stops both.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import logging.config
import secrets
from pathlib import Path

from ruamel.yaml import YAML

from ..config import ConfigError, load_config
from ..registration import generate_registration
from ..util.files import write_private
from .synapse import LocalSynapse, SynapseError

DEMO_USER = "demo"
SERVER_NAME = "localhost"


def _bridge_config(directory: Path, hs_port: int, as_port: int) -> dict:
    return {
        "homeserver": {"address": f"http://127.0.0.1:{hs_port}", "domain": SERVER_NAME},
        "appservice": {
            "address": f"http://127.0.0.1:{as_port}", "hostname": "127.0.0.1", "port": as_port,
            "id": "relayforge", "bot_username": "relayforgebot",
        },
        "database": {"uri": f"sqlite:{directory / 'relayforge.db'}"},
        "vault": {"provider": "file", "file": {"key_path": str(directory / "master.key")}},
        "audit": {"checkpoint_file": str(directory / "audit.checkpoint")},
        "bridge": {"permissions": {"*": "relay", SERVER_NAME: "admin"}},
        "logging": {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
            "handlers": {"file": {"class": "logging.FileHandler", "formatter": "plain",
                                  "filename": str(directory / "relayforge.log")}},
            "root": {"level": "INFO", "handlers": ["file"]},
        },
    }


def prepare(directory: Path, hs_port: int, as_port: int) -> tuple[Path, Path]:
    """Write the bridge config and registration unless a previous run already did."""
    directory.mkdir(parents=True, exist_ok=True)
    config_path = directory / "config.yaml"
    registration_path = directory / "registration.yaml"
    if not config_path.exists():
        with config_path.open("w") as stream:
            YAML().dump(_bridge_config(directory.resolve(), hs_port, as_port), stream)
    if not registration_path.exists():
        generate_registration(load_config(str(config_path), for_run=False),
                              str(registration_path))
    return config_path, registration_path


def demo_user(synapse: LocalSynapse, directory: Path) -> tuple[str, str]:
    password_file = directory / "demo-password.txt"
    mxid = f"@{DEMO_USER}:{SERVER_NAME}"
    if password_file.exists():
        return mxid, password_file.read_text().strip()
    password = secrets.token_urlsafe(12)
    synapse.register_user(DEMO_USER, password)
    write_private(password_file, password)
    return mxid, password


async def _serve(config_path: Path, ready_message: str) -> None:
    from ..app import Bridge, run_until_signalled

    config = load_config(str(config_path))
    logging.config.dictConfig(dict(config["logging"]))
    try:
        await run_until_signalled(Bridge(config), lambda: print(ready_message, flush=True))
    finally:
        print("Stopping the bridge and the homeserver...", flush=True)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bridge sandbox", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", default="sandbox", help="sandbox directory (default ./sandbox)")
    parser.add_argument("--hs-port", type=int, default=8008, help="homeserver port (first run)")
    parser.add_argument("--as-port", type=int, default=29340, help="bridge port (first run)")
    args = parser.parse_args(argv)
    directory = Path(args.dir)
    try:
        config_path, registration_path = prepare(directory, args.hs_port, args.as_port)
        hs_address = load_config(str(config_path))["homeserver.address"]
    except ConfigError as e:
        print(f"Cannot start the sandbox: {e}")
        return 2
    synapse = LocalSynapse(directory / "synapse", int(hs_address.rsplit(":", 1)[1]),
                           SERVER_NAME, [registration_path])
    try:
        print(f"Starting Synapse on {synapse.url} ...", flush=True)
        synapse.start()
        mxid, password = demo_user(synapse, directory)
        message = (
            "\nRelayForge sandbox is running.\n"
            f"  Homeserver: {synapse.url}\n"
            f"  User:       {mxid}\n"
            f"  Password:   {password}\n"
            f"  Bot:        @relayforgebot:{SERVER_NAME}  (start a DM and send: help)\n"
            f"  Logs:       {directory / 'relayforge.log'}, {synapse.directory}\n"
            "Press Ctrl-C to stop."
        )
        asyncio.run(_serve(config_path, message))
    except SynapseError as e:
        print(f"Cannot start the sandbox: {e}")
        return 1
    finally:
        synapse.stop()
    return 0
