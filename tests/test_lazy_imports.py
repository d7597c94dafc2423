"""An enabled network costs no SDK until someone uses it: a real bridge process with Slack,
Discord, Telegram and XMPP enabled and configured (Slack and Discord against the wire-level
fakes), no one linked, ready and its networks started, has not imported slack-sdk, Telethon,
slixmpp or the emoji tables. Discord's bot is the exception: it holds the Gateway connection
from start-up (it checks the bot token and the privileged intents then), so discord.py is
loaded with an enabled Discord.

The bridge runs in its own process: this one has imported every SDK for other tests."""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import sys
from pathlib import Path

from tests.fakes.discord import FakeDiscord
from tests.fakes.slack import FakeSlack

from .support.discord import build_world, discord_settings
from .support.matrix import DEADLINE
from .support.slack import slack_settings

ROOT = Path(__file__).resolve().parent.parent
LAZY_SDKS = ("slack_sdk", "telethon", "slixmpp", "emoji")
# The bridge as `python -m bridge` runs it; once ready, with its networks started and the
# linked people's sessions opened (none here), it says which networks run and which of the
# SDKs it has imported, then waits to be stopped.
REPORT = """
import asyncio, json, sys
from bridge.app import Bridge, run_until_signalled
from bridge.configure import load_config

bridge = Bridge(load_config(sys.argv[1]))

async def report() -> None:
    await bridge.connectors_started()
    if bridge._activation is not None:
        await asyncio.gather(bridge._activation, return_exceptions=True)
    loaded = sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[2:]))
    print(json.dumps({"networks": bridge.network_status(), "loaded": loaded}), flush=True)

asyncio.run(run_until_signalled(bridge, lambda: asyncio.ensure_future(report())))
"""


async def idle_report(config: Path, log: Path) -> dict:
    with log.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", REPORT, str(config), *LAZY_SDKS, "discord", cwd=ROOT,
            stdout=subprocess.PIPE, stderr=stderr)
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), DEADLINE)
        assert line, f"the bridge ended before it was ready; see {log}"
        return json.loads(line)
    finally:
        process.terminate()
        await process.wait()


async def test_an_idle_bridge_with_every_network_enabled_has_not_loaded_their_sdks(
        homeserver, db_uri, tmp_path):
    callback = homeserver.appservice_url
    async with FakeSlack() as slack, FakeDiscord() as discord:
        build_world(discord)
        config = homeserver.bridge_config(tmp_path, db_uri, extra={"networks": {
            "slack": slack_settings(slack, f"{callback}/link/slack/callback"),
            "discord": discord_settings(discord, f"{callback}/link/discord/callback"),
            "telegram": {"enabled": True, "api_id": 12345,
                         "api_hash": secrets.token_hex(16)},
            "xmpp": {"enabled": True}}})
        report = await idle_report(Path(config.path), tmp_path / "bridge.log")

    # Every network started (none is idle because it failed) ...
    assert report["networks"] == {"slack": "connected", "discord": "connected",
                                  "telegram": "connected", "xmpp": "connected"}
    # ... and only Discord's bot, which is online from start-up, has its SDK loaded.
    assert report["loaded"] == ["discord"]
