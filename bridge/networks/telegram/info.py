"""What the bridge knows of Telegram without importing Telethon: its label, its
`networks.telegram` schema and the keys an enabled Telegram needs together. Registered under
the `relayforge.network_info` entry-point group (pyproject.toml)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ...schema import Key, NetworkInfo

LABEL = "Telegram"
SERVER_KEYS = {"dc_id", "host", "port", "public_key_file"}


def _api_id(value: Any) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool)
                             and value > 0)


def _api_hash(value: Any) -> bool:
    return value is None or (isinstance(value, str) and len(value) == 32
                             and all(c in "0123456789abcdef" for c in value.lower()))


def _server(value: Any) -> bool:
    """A non-default data centre (Telegram's test DCs, or a test fake)."""
    if value is None:
        return True
    if not isinstance(value, Mapping) or set(value) - SERVER_KEYS or not value.get("host"):
        return False
    dc_ok = isinstance(value.get("dc_id", 2), int) and 1 <= value.get("dc_id", 2) <= 1000
    port = value.get("port", 443)
    port_ok = isinstance(port, int) and 0 < port < 65536
    key = value.get("public_key_file")
    return dc_ok and port_ok and (key is None or (isinstance(key, str) and os.path.isfile(key)))


SETTINGS: tuple[Key, ...] = (
    Key("networks.telegram.api_id", _api_id,
        "the bridge's Telegram API id, a number from my.telegram.org"),
    Key("networks.telegram.api_hash", _api_hash,
        "the bridge's Telegram API hash, 32 hex digits from my.telegram.org"),
    Key("networks.telegram.require_own_api_id", lambda v: isinstance(v, bool),
        "true or false (each person links with their own api_id and api_hash)",
        default=False),
    Key("networks.telegram.server", _server,
        "a mapping with host, and optionally dc_id (default 2), port (default 443) and "
        "public_key_file (the server's RSA public key, PEM) - or null for Telegram's own"),
)


def needs_api_credentials(telegram: Mapping[str, Any]) -> list[str]:
    """The bridge's API id and hash, unless each person brings their own."""
    if telegram.get("require_own_api_id"):
        return []
    return [f"networks.telegram.{key}: required when Telegram is enabled, unless "
            "require_own_api_id is true (see the README's Telegram section)"
            for key in ("api_id", "api_hash") if not telegram.get(key)]


INFO = NetworkInfo(name="telegram", label=LABEL, settings=SETTINGS,
                   check_enabled=needs_api_credentials)
