"""What the bridge knows of Discord without importing discord.py: its label, its
`networks.discord` schema (in `settings`), the keys an enabled Discord needs, and its
`policy.high_risk` rule. Registered under
the `relayforge.network_info` entry-point group (pyproject.toml)."""

from __future__ import annotations

from ...schema import NetworkInfo, RiskRule
from .settings import SETTINGS, needs_credentials

INFO = NetworkInfo(
    name="discord", label="Discord", settings=SETTINGS, check_enabled=needs_credentials,
    # The connector names every server the account is in as a marker "server:<id>".
    risk_rules=(RiskRule("discord_corporate_servers", "server:",
                         "it is a member of the corporate Discord server {value}",
                         values="server ids"),),
)
