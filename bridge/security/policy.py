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

from ..schema import NetworkInfo, RiskRule, installed_networks
from .impersonation import Action

ALL_ACTIONS = tuple(a.value for a in Action)


def _risk_rules(networks: Mapping[str, NetworkInfo] | None) -> dict[str, tuple[RiskRule, ...]]:
    """The `policy.high_risk` rules each installed network offers (its package's info)."""
    found = installed_networks() if networks is None else networks
    return {name: info.risk_rules for name, info in found.items() if info.risk_rules}


class Policy:
    def __init__(self, config: Mapping[str, Any] | None,
                 networks: Mapping[str, NetworkInfo] | None = None) -> None:
        config = config or {}
        self._actions: dict[str, set[str]] = {
            network: set(actions) for network, actions in
            (config.get("allowed_actions") or {}).items()}
        self._denied: dict[str, list[str]] = {
            network: list(patterns) for network, patterns in
            (config.get("denied_channels") or {}).items()}
        high_risk = config.get("high_risk") or {}
        self._risky_networks = set(high_risk.get("networks") or [])
        # Per network, its rules with what the admin gave each: the entries of a list rule,
        # or whether a true/false rule is on.
        self._risk: dict[str, list[tuple[RiskRule, Any]]] = {
            network: [(rule, {str(v) for v in high_risk.get(rule.key) or []}
                       if rule.values else high_risk.get(rule.key) is True) for rule in rules]
            for network, rules in _risk_rules(networks).items()}

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
        for rule, given in self._risk.get(network, []):
            if rule.values is None:
                if given and rule.marker in markers:
                    return rule.reason
                continue
            matching = sorted(m.removeprefix(rule.marker) for m in markers
                              if m.startswith(rule.marker)
                              and m.removeprefix(rule.marker) in given)
            if matching:
                return rule.reason.format(value=matching[0])
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


def check_policy(raw: Any, networks: Mapping[str, NetworkInfo] | None = None) -> list[str]:
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
    problems += _check_high_risk(raw.get("high_risk"), networks)
    return problems


def _check_high_risk(raw: Any, networks: Mapping[str, NetworkInfo] | None) -> list[str]:
    if raw is None:
        return []
    rules = [rule for network_rules in _risk_rules(networks).values()
             for rule in network_rules]
    keys = ["networks", *(rule.key for rule in rules)]
    if not isinstance(raw, Mapping):
        return [f"policy.high_risk: expected a mapping ({', '.join(keys)})"]
    problems = []
    lists = [("networks", "network names"), *((r.key, r.values) for r in rules if r.values)]
    for key, entries in lists:
        value = raw.get(key)
        if value is not None and not (isinstance(value, list) and all(
                isinstance(v, str | int) and not isinstance(v, bool) for v in value)):
            problems.append(f"policy.high_risk.{key}: got {value!r}; expected a list of "
                            f"{entries}")
    for rule in rules:
        value = raw.get(rule.key)
        if rule.values is None and value is not None and not isinstance(value, bool):
            problems.append(f"policy.high_risk.{rule.key}: got {value!r}; expected true or "
                            "false")
    unknown = sorted(set(raw) - set(keys))
    if unknown:
        expected = ", ".join(keys[:-1]) + " or " + keys[-1] if len(keys) > 1 else keys[0]
        problems.append(f"policy.high_risk.{unknown[0]}: unknown key; expected {expected}")
    return problems
