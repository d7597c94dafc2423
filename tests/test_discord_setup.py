"""Setting Discord up: an enabled Discord without its bot token or OAuth2 client secret stops
start-up naming the key (the bot token may come from the environment instead); the
connector refuses such a section too, and the shapes of the other keys are checked. A bot
token Discord refuses, or an application lacking the privileged intents, stops only Discord,
and every admin is told once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.config import ConfigError
from bridge.configure import load_config
from bridge.networks.discord.connector import DiscordConnector

ROOT = Path(__file__).resolve().parent.parent
BASE = """\
homeserver:
    address: https://matrix.example.org
    domain: example.org
appservice:
    address: http://localhost:29340
    as_token: a-token
    hs_token: h-token
bridge:
    permissions:
        "*": relay
networks:
    discord:
        enabled: true
        client_id: "1234"
"""


def run_cli(path: Path, **environ: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAYFORGE_")}
    return subprocess.run([sys.executable, "-m", "bridge", "-c", str(path)],
                          capture_output=True, text=True, timeout=60,
                          env={**env, "PYTHONPATH": str(ROOT), **environ})


def test_a_missing_bot_token_or_client_secret_stops_start_up(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(BASE)
    result = run_cli(path)
    assert result.returncode == 2
    assert "Cannot start" in result.stderr
    assert "networks.discord.bot_token: required when Discord is enabled" in result.stderr
    assert "networks.discord.client_secret: required when Discord is enabled" in result.stderr
    assert "networks.discord.client_id" not in result.stderr
    # The bot token from the environment is as good as one in the file.
    result = run_cli(path, RELAYFORGE_NETWORKS__DISCORD__BOT_TOKEN="bot-token")
    assert "networks.discord.bot_token" not in result.stderr
    assert "networks.discord.client_secret: required" in result.stderr


def test_a_disabled_discord_needs_nothing(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(BASE.replace("enabled: true", "enabled: false"))
    config = load_config(str(path), environ={})
    assert config["networks.discord.api_url"] == "https://discord.com/api/v10"
    assert config["networks.discord.gateway_url"] == "wss://gateway.discord.gg/"


def test_bad_discord_values_are_named(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(BASE + "        bot_token: t\n        client_secret: s\n"
                    "        gateway_url: http://not-a-websocket\n"
                    "        max_upload_bytes: 0\n")
    with pytest.raises(ConfigError) as refused:
        load_config(str(path), environ={})
    problems = "\n".join(refused.value.problems)
    assert "networks.discord.gateway_url: got 'http://not-a-websocket'" in problems
    assert "networks.discord.max_upload_bytes: got 0" in problems


def test_the_connector_refuses_a_section_without_its_keys():
    with pytest.raises(ConfigError) as refused:
        DiscordConnector({"enabled": True, "client_id": "1", "client_secret": "s"})
    assert refused.value.problems == [
        "networks.discord.bot_token: required when Discord is enabled (see the README's "
        "Discord section)"]


@pytest.fixture
async def discord_fake():
    from tests.fakes.discord import FakeDiscord

    async with FakeDiscord() as fake:
        yield fake


async def test_a_bot_token_refused_at_start_up_leaves_the_bridge_running(
        start_bridge, discord_fake, homeserver, caplog):
    from .support.discord import build_world, discord_settings

    build_world(discord_fake)
    settings = discord_settings(discord_fake, f"{homeserver.appservice_url}/link/discord/"
                                "callback")
    bridge = await start_bridge(connectors=[], extra={"networks": {"discord": {
        **settings, "bot_token": "not-the-token"}}})
    # Only Discord is down, and the log names the key to fix.
    assert bridge.network_status()["discord"] == "failed"
    assert "Discord refused the bridge's bot token (networks.discord.bot_token)" in caplog.text


async def test_a_bot_token_refused_later_is_one_notice_to_every_admin(
        start_bridge, discord_fake, homeserver):
    from .support.discord import build_world, discord_settings
    from .support.matrix import MatrixUser

    build_world(discord_fake)
    settings = discord_settings(discord_fake, f"{homeserver.appservice_url}/link/discord/"
                                "callback")
    admin = await MatrixUser.register(homeserver.synapse, "root")
    person = await MatrixUser.register(homeserver.synapse, "someone")
    try:
        bridge = await start_bridge(connectors=[], extra={"networks": {"discord": settings}},
                                    permissions={"*": "user", admin.mxid: "admin"})
        bot = homeserver.bot_mxid
        admin_room = await admin.open_management_room(bot)
        person_room = await person.open_management_room(bot)
        # The token is reset in the Developer Portal: the next IDENTIFY is refused (4004).
        discord_fake.app.bot_token = "reset-in-the-portal"
        await discord_fake.gateway.invalidate()
        told = await admin.wait_for_notice(admin_room, bot, "networks.discord.bot_token",
                                           after=None)
        assert "Developer Portal" in told and "restart the bridge" in told
        assert bridge.network_status()["discord"] == "failed"
        # The bridge still answers; the admin was told once, the other person not at all.
        await admin.send_text(admin_room, "help")
        await admin.wait_for_notice(admin_room, bot, "account")
        notices = await admin.notices_from(admin_room, bot)
        assert sum("networks.discord.bot_token" in n for n in notices) == 1
        assert not any("bot_token" in n for n in await person.notices_from(person_room, bot))
    finally:
        await admin.close()
        await person.close()


async def test_an_application_lacking_privileged_intents_is_named_to_every_admin(
        start_bridge, discord_fake, homeserver, caplog):
    """The networks start after the bridge is ready, so a Discord application without its
    privileged intents cannot stop start-up: Discord alone stays down, the log says why at
    ERROR, every admin is told which intents to turn on and where, and `ping` shows it."""
    from bridge.networks.base import RemoteMessage

    from .support.discord import build_world, discord_settings
    from .support.loopback import LoopbackConnector
    from .support.matrix import MatrixUser
    from .test_portal_routing import remote_names

    admin = await MatrixUser.register(homeserver.synapse, "root")
    person = await MatrixUser.register(homeserver.synapse, "someone")
    permissions = {"*": "user", admin.mxid: "admin"}
    try:
        # Both have used the bridge before (their management rooms exist).
        first = await start_bridge(permissions=permissions)
        bot = homeserver.bot_mxid
        admin_room = await admin.open_management_room(bot)
        person_room = await person.open_management_room(bot)
        await first.stop()

        build_world(discord_fake)
        settings = discord_settings(discord_fake, f"{homeserver.appservice_url}/link/discord/"
                                    "callback")
        # An application without the privileged intents: the Gateway closes with 4014.
        discord_fake.app.flags = 0
        discord_fake.gateway.refuse_identify = 4014
        loopback = LoopbackConnector()
        bridge = await start_bridge(connectors=[loopback], permissions=permissions,
                                    extra={"networks": {"discord": settings}})
        told = await admin.wait_for_notice(admin_room, bot, "did not start", after=None)
        assert "discord" in told and "Developer Portal" in told
        assert "Server Members Intent" in told and "Message Content Intent" in told
        assert bridge.network_status()["discord"] == "failed"
        assert any(r.levelname == "ERROR" and "Message Content Intent" in r.getMessage()
                   for r in caplog.records)

        # The status names the reason; the other network keeps working.
        await admin.send_text(admin_room, "ping")
        pong = await admin.wait_for_notice(admin_room, bot, "Pong")
        assert "discord: failed (" in pong and "Message Content Intent" in pong
        assert "loopback: connected" in pong
        room, rita = remote_names()
        await loopback.emit(RemoteMessage(room=room, sender=rita, receiver=admin.mxid,
                                          message_id="r-1", text="still bridged"))
        portal = await admin.wait_for_invite()
        await admin.wait_for_event(portal, lambda e: getattr(e.content, "body", None)
                                   == "still bridged", "the loopback message", after=None)
        # Once, and only to the admin.
        notices = await admin.notices_from(admin_room, bot)
        assert sum("did not start" in n for n in notices) == 1
        assert not any("did not start" in n for n in await person.notices_from(person_room,
                                                                               bot))
    finally:
        await admin.close()
        await person.close()
