"""The admin's policy: which actions the bridge may take on each network, and where, and
which accounts are high-risk (linking them needs a fresh MFA check).

It bounds everything people do through the bridge: an action it does not allow is refused
before any impersonation token is minted, with a notice saying why, and nobody can grant the
bridge more than it allows (see `capabilities.py`).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from typing import Any

from .impersonation import Action

ALL_ACTIONS = tuple(a.value for a in Action)


class Policy:
    def __init__(self, config: Mapping[str, Any] | None) -> None:
        config = config or {}
        self._actions: dict[str, set[str]] = {
            network: set(actions) for network, actions in
            (config.get("allowed_actions") or {}).items()}
        self._denied: dict[str, list[str]] = {
            network: list(patterns) for network, patterns in
            (config.get("denied_channels") or {}).items()}
        high_risk = config.get("high_risk") or {}
        self._risky_networks = set(high_risk.get("networks") or [])
        self._corporate_servers = {str(s) for s in
                                   high_risk.get("discord_corporate_servers") or []}
        self._enterprise_grid = bool(high_risk.get("slack_enterprise_grid"))

    def allowed_actions(self, network: str) -> list[str]:
        allowed = self._actions.get(network)
        return [a for a in ALL_ACTIONS if allowed is None or a in allowed]

    def denied_channels(self, network: str) -> list[str]:
        return list(self._denied.get(network, []))

    def grant_refusal(self, network: str, channel_pattern: str, actions: list[str]
                      ) -> str | None:
        """Why a person cannot allow these actions there, or None. A pattern the policy denies
        as a whole (it matches one of the denied patterns) cannot be allowed; a wider pattern
        can, and the policy still refuses the denied rooms inside it at send time."""
        forbidden = [a for a in actions if a not in self.allowed_actions(network)]
        if forbidden:
            return (f"The bridge's policy does not allow {', '.join(forbidden)} on {network}, "
                    "so you cannot allow it.")
        for pattern in self._denied.get(network, []):
            if fnmatch.fnmatchcase(channel_pattern, pattern):
                return (f"The bridge's policy does not allow acting in {channel_pattern} on "
                        f"{network} (it denies {pattern}), so you cannot allow it.")
        return None

    def high_risk_reason(self, network: str, markers: list[str]) -> str | None:
        """Why linking this account needs a fresh MFA check, or None. `markers` are what the
        connector learned while verifying the account (see `LinkedAccount.risk_markers`)."""
        if network in self._risky_networks:
            return f"the bridge's policy treats every {network} account as high-risk"
        servers = sorted(m.removeprefix("server:") for m in markers
                         if m.startswith("server:")
                         and m.removeprefix("server:") in self._corporate_servers)
        if network == "discord" and servers:
            return f"it is a member of the corporate Discord server {servers[0]}"
        if network == "slack" and self._enterprise_grid and "enterprise_grid" in markers:
            return "it belongs to a Slack Enterprise Grid organisation"
        return None

    def refusal(self, network: str, channel: str, action: Action) -> str | None:
        """Why this action is not allowed, or None when it is."""
        allowed = self._actions.get(network)
        if allowed is not None and Action(action).value not in allowed:
            return (f"The bridge's policy does not allow {Action(action).value} on {network}, "
                    "so this was not sent.")
        for pattern in self._denied.get(network, []):
            if fnmatch.fnmatchcase(channel, pattern):
                return (f"The bridge's policy does not allow acting in {channel} on "
                        f"{network}, so this was not sent.")
        return None


def check_policy(raw: Any) -> list[str]:
    """Config problems in the `policy` section, naming the key."""
    if raw is None:
        return []
    if not isinstance(raw, Mapping):
        return ["policy: expected a mapping"]
    problems = []
    for network, actions in (raw.get("allowed_actions") or {}).items():
        bad = [a for a in actions or [] if a not in ALL_ACTIONS] if isinstance(
            actions, list) else ["(not a list)"]
        if bad:
            problems.append(f"policy.allowed_actions.{network}: unknown {', '.join(bad)}; "
                            f"expected some of {', '.join(ALL_ACTIONS)}")
    for network, patterns in (raw.get("denied_channels") or {}).items():
        if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
            problems.append(f"policy.denied_channels.{network}: expected a list of patterns")
    problems += _check_high_risk(raw.get("high_risk"))
    return problems


def _check_high_risk(raw: Any) -> list[str]:
    if raw is None:
        return []
    if not isinstance(raw, Mapping):
        return ["policy.high_risk: expected a mapping (networks, discord_corporate_servers, "
                "slack_enterprise_grid)"]
    problems = []
    for key in ("networks", "discord_corporate_servers"):
        value = raw.get(key)
        if value is not None and not (isinstance(value, list) and all(
                isinstance(v, str | int) and not isinstance(v, bool) for v in value)):
            problems.append(f"policy.high_risk.{key}: got {value!r}; expected a list of "
                            + ("network names" if key == "networks" else "server ids"))
    grid = raw.get("slack_enterprise_grid")
    if grid is not None and not isinstance(grid, bool):
        problems.append(f"policy.high_risk.slack_enterprise_grid: got {grid!r}; expected true "
                        "or false")
    unknown = sorted(set(raw) - {"networks", "discord_corporate_servers",
                                 "slack_enterprise_grid"})
    if unknown:
        problems.append(f"policy.high_risk.{unknown[0]}: unknown key; expected networks, "
                        "discord_corporate_servers or slack_enterprise_grid")
    return problems
