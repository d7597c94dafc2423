"""The shapes a config schema is written in: one `Key` per setting, and the `NetworkInfo`
each network package exposes (its label, its keys, its checks and its risk rules), found
through entry points without importing any connector. Imports nothing of the bridge."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from typing import Any

import attrs


@attrs.frozen
class Key:
    """One config key: where it lives, whether it must be given, and what a good value is."""

    path: str
    check: Callable[[Any], bool]
    expect: str
    default: Any = None
    required: bool = False
    # Keys the bridge itself fills in (tokens from `-g`) are only required when running.
    needed_to_run_only: bool = False


@attrs.frozen
class RiskRule:
    """A `policy.high_risk.<key>` a network offers. A list rule (`values` says what its
    entries are) matches a risk marker `<marker><entry>`; a true/false rule (`values` None)
    matches the marker itself. `reason` completes "linking needs MFA because ..."; `{value}`
    is the matching entry."""

    key: str
    marker: str
    reason: str
    values: str | None = None


@attrs.frozen
class NetworkInfo:
    """What the rest of the bridge knows of a network without importing its connector (and
    its SDK): exposed by the package's `info` module under the `relayforge.network_info`
    entry-point group. See docs/adding-a-network.md."""

    name: str
    label: str
    #: `networks.<name>.*` keys beyond enabled and the two templates, which every network has.
    settings: tuple[Key, ...] = ()
    #: Problems of an enabled network's (defaulted) section that no single key shows: keys
    #: needed together, each problem naming its key.
    check_enabled: Callable[[Mapping[str, Any]], list[str]] | None = None
    risk_rules: tuple[RiskRule, ...] = ()


#: The entry-point groups a network package registers under (see pyproject.toml): its
#: `NetworkInfo`, and its `Connector` class (imported only when the network is enabled).
NETWORK_INFO_ENTRY_POINTS = "relayforge.network_info"
CONNECTOR_ENTRY_POINTS = "relayforge.networks"


def installed_networks() -> dict[str, NetworkInfo]:
    """The installed networks by name (sorted), from their entry points; nothing of their
    connectors is imported. A connector registered without an info gets a bare one."""
    found: dict[str, NetworkInfo] = {}
    for entry in entry_points(group=NETWORK_INFO_ENTRY_POINTS):
        info = entry.load()
        if not isinstance(info, NetworkInfo) or info.name != entry.name:
            raise TypeError(f"the {NETWORK_INFO_ENTRY_POINTS} entry point {entry.name} "
                            f"({entry.value}) is not the NetworkInfo of {entry.name}")
        found[entry.name] = info
    for entry in entry_points(group=CONNECTOR_ENTRY_POINTS):
        found.setdefault(entry.name, NetworkInfo(entry.name, entry.name.title()))
    return dict(sorted(found.items()))


def known_networks() -> tuple[str, ...]:
    """The names of the installed networks."""
    return tuple(installed_networks())
