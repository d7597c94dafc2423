"""What the bridge knows of XMPP without importing slixmpp: its label and its `networks.xmpp`
schema. Registered under the `relayforge.network_info` entry-point group (pyproject.toml)."""

from __future__ import annotations

import os
import re

from ...schema import Key, NetworkInfo

SETTINGS: tuple[Key, ...] = (
    Key("networks.xmpp.ca_file", lambda v: isinstance(v, str) and os.path.isfile(v),
        "the path of a PEM file of extra CAs to trust (or null)"),
    Key("networks.xmpp.nameserver",
        lambda v: isinstance(v, str) and re.match(r"^[0-9a-fA-F.:\[\]]+(:\d+)?$", v)
        is not None, "host:port of the DNS server for SRV look-ups (or null for the "
        "system's)"),
)

INFO = NetworkInfo(name="xmpp", label="XMPP", settings=SETTINGS)
