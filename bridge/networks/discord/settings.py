"""`networks.discord`: the schema the config validates (through `info.INFO`), and the keys
an enabled Discord cannot start without. Nothing here imports discord.py."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ...schema import Key

DISCORD_API = "https://discord.com/api/v10"
DISCORD_GATEWAY = "wss://gateway.discord.gg/"
DISCORD_AUTHORIZE = "https://discord.com/oauth2/authorize"
DISCORD_CDN = "https://cdn.discordapp.com"
# What a webhook may upload in one message on a server without boosts.
UPLOAD_LIMIT = 10 * 1024 * 1024


def _optional_str(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip() != "")


def _url(schemes: str) -> Any:
    return lambda v: isinstance(v, str) and re.match(rf"^({schemes})://[^\s/]+", v) is not None


def _number(low: float, high: float) -> Any:
    return lambda v: (isinstance(v, int | float) and not isinstance(v, bool)
                      and low <= v <= high)


SETTINGS: tuple[Key, ...] = (
    Key("networks.discord.bot_token", _optional_str,
        "the bot token of the Discord application (or RELAYFORGE_NETWORKS__DISCORD__BOT_TOKEN)"),
    Key("networks.discord.client_id", _optional_str, "the Discord application's client ID"),
    Key("networks.discord.client_secret", _optional_str,
        "the Discord application's OAuth2 client secret"),
    Key("networks.discord.api_url", _url("https?"), "Discord's REST API URL (with /v10)",
        default=DISCORD_API),
    Key("networks.discord.gateway_url", _url("wss?"), "Discord's Gateway URL",
        default=DISCORD_GATEWAY),
    Key("networks.discord.oauth_url", _url("https?"), "Discord's OAuth2 authorisation page",
        default=DISCORD_AUTHORIZE),
    Key("networks.discord.cdn_url", _url("https?"), "Discord's CDN (pictures, attachments)",
        default=DISCORD_CDN),
    Key("networks.discord.guild_ready_timeout", _number(0, 60),
        "seconds to wait for the servers' data after connecting", default=2.0),
    Key("networks.discord.grant_check_seconds", _number(0, 86400),
        "seconds between checks that a linked person's grant is still valid before sending "
        "as them", default=300),
    Key("networks.discord.max_upload_bytes", _number(1, 500 * 1024 * 1024),
        "the largest file sent to Discord, in bytes (10 MiB on servers without boosts)",
        default=UPLOAD_LIMIT),
    Key("networks.discord.max_refusals", _number(1, 5000),
        "401/403 answers in ten minutes after which the bridge stops sending into a channel "
        "(Discord bans at 10,000 invalid requests in ten minutes)", default=50),
)


def needs_credentials(settings: Mapping[str, Any]) -> list[str]:
    """An enabled Discord needs its bot and its OAuth2 client, each problem naming its key."""
    return [f"networks.discord.{key}: required when Discord is enabled (see the README's "
            "Discord section)" for key in ("bot_token", "client_id", "client_secret")
            if not settings.get(key)]


def missing_settings(settings: Mapping[str, Any]) -> None:
    """The same check when a connector is made from a section that skipped validation."""
    problems = needs_credentials(settings)
    if problems:
        from ...config import ConfigError

        raise ConfigError(problems, "config")
