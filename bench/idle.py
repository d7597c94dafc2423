"""Idle memory: a real bridge process with all four networks (Slack, Discord, Telegram, XMPP)
enabled and configured, no one linked, once ready and its networks started; against a bare
process that imports only mautrix.appservice and aiohttp (what any mautrix appservice
carries). Both are read from /proc/<pid>/status (VmRSS) after they settle.

Slack and Discord point at the tests' wire-level fakes (tests/fakes), run in this process:
the Discord bot logs in and holds its Gateway connection as it would against Discord; Slack
would open Socket Mode with the first linked person. Telegram and XMPP need no remote answer
until someone links. Ratio = bridge/baseline (lower is better); the peer figure is
mautrix-telegram 0.15.3 idle with its one network, measured on this machine kind (issue 18).

    .venv/bin/python -m bench.idle        # on its own (starts a Synapse), prints JSON
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from bridge.sandbox.synapse import free_port

from .harness import Harness

PEER_MIB = 84.7  # mautrix-telegram 0.15.3 with its one network, idle (issue 18)
SETTLE_SECONDS = 3.0
SAMPLES = 5
READY_TIMEOUT = 120.0
SDK_MODULES = ("slack_sdk", "discord", "telethon", "slixmpp")
ROOT = Path(__file__).resolve().parent.parent

# The bridge as `python -m bridge` runs it, telling the parent when it is ready and its
# networks have started (with which SDKs it has imported by then), then idle until SIGTERM.
BRIDGE = """
import asyncio, json, sys
from bridge.app import Bridge, run_until_signalled
from bridge.configure import load_config

bridge = Bridge(load_config(sys.argv[1]))

async def tell() -> None:
    await bridge.connectors_started()
    if bridge._activation is not None:
        await asyncio.gather(bridge._activation, return_exceptions=True)
    sdks = sorted(m for m in sys.modules if m in SDKS)
    print(json.dumps({"ready": bridge.network_status(), "sdks": sdks}), flush=True)

asyncio.run(run_until_signalled(bridge, lambda: asyncio.ensure_future(tell())))
""".replace("SDKS", repr(SDK_MODULES))
BASELINE = """
import sys
import aiohttp
import mautrix.appservice
print("ready", flush=True)
sys.stdin.read()
"""


def vm_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


async def settled_rss(pid: int) -> float:
    """The median of a few readings once start-up's garbage has had time to go."""
    await asyncio.sleep(SETTLE_SECONDS)
    readings = []
    for _ in range(SAMPLES):
        readings.append(vm_rss_mib(pid))
        await asyncio.sleep(0.5)
    return round(statistics.median(readings), 1)


async def _first_line(process: asyncio.subprocess.Process, what: str) -> str:
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), READY_TIMEOUT)
    if not line:
        raise RuntimeError(f"{what} ended before it was ready (exit {await process.wait()})")
    return line.decode()


async def baseline_rss() -> float:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", BASELINE, cwd=ROOT, stdin=subprocess.PIPE,
        stdout=subprocess.PIPE)
    try:
        await _first_line(process, "the baseline process")
        return await settled_rss(process.pid)
    finally:
        assert process.stdin is not None
        process.stdin.close()
        await process.wait()


def idle_config(source: Path, directory: Path, networks: dict[str, Any]) -> Path:
    """The bench bridge's config (its registration, homeserver and tokens) on a database of
    its own and another port, with the four networks enabled."""
    yaml = YAML()
    data = yaml.load(source.read_text())
    data["appservice"]["port"] = free_port()
    data["database"] = {"uri": f"sqlite:{directory / 'idle.db'}"}
    data["vault"] = {"file": {"key_path": str(directory / "idle.key")}}
    data["audit"] = {"checkpoint_file": str(directory / "idle.checkpoint")}
    data.setdefault("networks", {}).update(networks)
    out = directory / "idle.yaml"
    with out.open("w") as stream:
        yaml.dump(data, stream)
    return out


def _networks(slack: Any, discord: Any, callback: str) -> dict[str, Any]:
    slack.app.redirect_uris = [f"{callback}/link/slack/callback"]
    discord.app.redirect_uris = [f"{callback}/link/discord/callback"]
    return {
        "slack": {"enabled": True, "client_id": slack.app.client_id,
                  "client_secret": slack.app.client_secret, "app_token": slack.app.app_token,
                  "signing_secret": slack.app.signing_secret, "api_url": slack.api_url,
                  "oauth_url": slack.authorize_endpoint},
        "discord": {"enabled": True, "bot_token": discord.app.bot_token,
                    "client_id": discord.app.client_id,
                    "client_secret": discord.app.client_secret, "api_url": discord.api_url,
                    "gateway_url": discord.gateway_url,
                    "oauth_url": discord.authorize_endpoint, "cdn_url": discord.url,
                    "guild_ready_timeout": 0.5},
        # Telegram's own servers by default: nothing is asked of them until someone links.
        "telegram": {"enabled": True, "api_id": 12345, "api_hash": secrets.token_hex(16)},
        "xmpp": {"enabled": True},
    }


async def idle_bridge(config: Path, log_path: Path) -> dict[str, Any]:
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", BRIDGE, str(config), cwd=ROOT, stdout=subprocess.PIPE,
            stderr=log)
    started = time.perf_counter()
    try:
        told = json.loads(await _first_line(process, "the bridge"))
        ready_s = time.perf_counter() - started
        return {**told, "ready_s": round(ready_s, 2), "rss": await settled_rss(process.pid)}
    except Exception as e:
        raise RuntimeError(f"{e}; its log: {log_path}") from e
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 30)
        except TimeoutError:
            process.kill()
            await process.wait()


async def idle_rss(h: Harness, directory: Path) -> dict[str, Any]:
    """The bench part `idle_rss`: needs the harness's Synapse and bridge registration."""
    from tests.fakes.discord import FakeDiscord
    from tests.fakes.slack import FakeSlack

    async with FakeSlack() as slack, FakeDiscord() as discord:
        # A small world for the bot: one server with two channels and two people.
        owner = discord.add_user("owner", "Owner")
        guild = discord.add_guild("Acme", owner, [discord.add_user("member", "Member")])
        discord.add_channel(guild, "general")
        discord.add_channel(guild, "random")
        source = directory / "config.yaml"
        address = YAML(typ="safe").load(source.read_text())["appservice"]["address"]
        config = idle_config(source, directory, _networks(slack, discord, address))
        bridge = await idle_bridge(config, directory / "idle-bridge.log")
    baseline = await baseline_rss()
    rss = bridge["rss"]
    return {
        "networks_enabled": sorted(bridge["ready"]), "network_states": bridge["ready"],
        "persons_linked": 0, "sdks_imported_at_idle": bridge["sdks"],
        "bridge_rss_mib": rss, "baseline_rss_mib": baseline,
        "ratio": round(rss / baseline, 2),
        "peer_one_network_rss_mib": PEER_MIB, "below_peer": rss < PEER_MIB,
        "ready_s": bridge["ready_s"],
    }


async def _main() -> dict[str, Any]:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="relayforge-idle-") as tmp:
        h = Harness(Path(tmp), None)
        try:
            await h.start()
            return await idle_rss(h, Path(tmp))
        finally:
            await h.stop()


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    print(json.dumps(asyncio.run(_main()), indent=2))
