"""The admin's policy: which actions the bridge may take on each network, and where.

It bounds everything people do through the bridge: an action it does not allow is refused
before any impersonation token is minted, with a notice saying why.
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
    return problems
