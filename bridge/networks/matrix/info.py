"""What the bridge knows of the Matrix persona network without importing its connector: its
label and its settings. Its settings are the top-level `double_puppet` section (the name the
mautrix bridges use), since the registration (`-g`) and the Matrix side read them too.
Registered under the `relayforge.network_info` entry-point group (pyproject.toml)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ...schema import Key, NetworkInfo

#: How a secret for the appservice-token method is written (as in the mautrix bridges).
AS_TOKEN_PREFIX = "as_token:"
_SERVER_NAME = re.compile(r"^[A-Za-z0-9.\-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$")


def _servers(value: Any) -> bool:
    return isinstance(value, Mapping) and all(
        isinstance(name, str) and _SERVER_NAME.match(name) and isinstance(url, str)
        and re.match(r"^https?://[^\s/]+", url) for name, url in value.items())


def _secrets(value: Any) -> bool:
    return isinstance(value, Mapping) and all(
        isinstance(name, str) and _SERVER_NAME.match(name) and isinstance(secret, str)
        and secret.startswith(AS_TOKEN_PREFIX) and len(secret) > len(AS_TOKEN_PREFIX) + 16
        for name, secret in value.items())


SETTINGS: tuple[Key, ...] = (
    Key("double_puppet.servers", _servers,
        "a mapping of server name to its client-server URL, e.g. {example.org: "
        "https://matrix.example.org} (the bridge's own homeserver needs no entry)", default={}),
    Key("double_puppet.secrets", _secrets,
        'a mapping of server name to "as_token:<token>" of the double-puppeting registration '
        "(-g writes the one for the bridge's own homeserver)", default={}),
    Key("double_puppet.auto", lambda v: isinstance(v, bool),
        "true or false (link a person's Matrix account on their first contact, where the "
        "server has a secret)", default=False),
)

INFO = NetworkInfo(name="matrix", label="Matrix", settings=SETTINGS)
