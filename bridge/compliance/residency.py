"""Data residency: where the bridge's data may live (`compliance.residency`).

The admin names the regions data may live in and declares the region of every store the
bridge writes (the database, the vault's key provider, the homeserver's media, the directory
legal-hold exports go to). Start-up refuses a store that is undeclared or outside them,
naming it. With residency on, portals and spaces are made non-federating (`m.federate:
false`), a rule may only map into a room of this homeserver that does not federate, and a
network workspace (or a whole network) the admin declares in another region can be neither
linked nor mapped. A workspace nobody declared is not limited.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs
from mautrix.types import EventType, StateEvent

from ..config import Config, get_path
from ..schema import NetworkInfo

#: Every store the bridge writes, with what the admin declares for it.
STORES: dict[str, str] = {
    "database": "the database (database.uri)",
    "vault": "the vault's key provider (vault.provider)",
    "homeserver_media": "the homeserver's media store",
    "export_directory": "the directory legal-hold exports are written to",
}
_PREFIX = "compliance.residency"


def _region(value: Any) -> str:
    return str(value).strip().upper()


@attrs.frozen
class Residency:
    """The allowed regions and the regions the admin declared for networks."""

    regions: frozenset[str]
    #: network -> a region for the whole network, or {workspace: region}
    networks: Mapping[str, Any] = attrs.field(factory=dict)

    @classmethod
    def from_config(cls, config: Config) -> Residency | None:
        """None when residency is off (no `compliance.residency.regions`)."""
        regions = config.get(f"{_PREFIX}.regions")
        if not regions:
            return None
        return cls(frozenset(_region(r) for r in regions),
                   dict(config.get(f"{_PREFIX}.networks") or {}))

    @property
    def allowed(self) -> str:
        return ", ".join(sorted(self.regions))

    def network_region(self, network: str, workspace: str | None) -> str | None:
        """The declared region; `workspace` None: not known yet (before a login), so only a
        declaration for the whole network counts."""
        declared = self.networks.get(network)
        if isinstance(declared, Mapping):
            if workspace is None:
                return None
            value = declared.get(workspace) if workspace else None
            if value is None:
                value = declared.get("*")
            return _region(value) if value is not None else None
        return _region(declared) if declared is not None else None

    def network_refusal(self, network: str, workspace: str | None, what: str) -> str | None:
        """Why linking or mapping `what` (in `workspace` of `network`) is refused, or None."""
        region = self.network_region(network, workspace)
        if region is None or region in self.regions:
            return None
        where = f"{network} workspace {workspace}" if workspace and isinstance(
            self.networks.get(network), Mapping) else network
        return (f"Refused by data residency: {what} is on {where}, whose data the bridge's "
                f"admin declared to be in {region}, outside the regions this bridge allows "
                f"({self.allowed}). Nothing was stored.")

    def room_refusal(self, state: Iterable[StateEvent], room: str, domain: str) -> str | None:
        """Why an existing Matrix room may not become a portal, read from its state."""
        create = next((e for e in state if e.type == EventType.ROOM_CREATE), None)
        if create is None:
            return f"I cannot read how {room} was created, so I cannot check where it lives."
        server = str(create.sender).partition(":")[2]
        rule = (f"with data residency on, the bridge maps only into rooms of this homeserver "
                f"({domain}) that do not federate")
        if server != domain:
            return f"Refused: {room} is a room of another homeserver ({server}); {rule}."
        if getattr(create.content, "federate", True) is not False:
            return (f"Refused: {room} federates with other homeservers (it was created "
                    f"without m.federate: false); {rule}. Map into a new room instead (leave "
                    "out --room), or into a room created with federation off.")
        return None


def store_problems(config: Config) -> list[str]:
    """Each store that is undeclared or outside the allowed regions, named by its key."""
    residency = Residency.from_config(config)
    if residency is None:
        return []
    problems = []
    for store, what in STORES.items():
        key = f"{_PREFIX}.stores.{store}"
        declared = config.get(key)
        if declared is None:
            problems.append(f"{key}: undeclared; with {_PREFIX}.regions set, declare the "
                            f"region of {what} (allowed: {residency.allowed})")
        elif _region(declared) not in residency.regions:
            problems.append(f"{key}: {what} is declared in {_region(declared)}, outside the "
                            f"allowed regions ({residency.allowed})")
    return problems


def config_problems(effective: Mapping[str, Any], networks: Mapping[str, NetworkInfo]
                    ) -> list[str]:
    """The shape of `compliance.residency.networks` (a ConfigCheck, see bridge.configure)."""
    declared = get_path(effective, f"{_PREFIX}.networks", None)
    if not isinstance(declared, Mapping):
        return []
    configured = get_path(effective, "networks", None)
    known = {*networks, *(configured if isinstance(configured, Mapping) else ())}
    problems = []
    for network, value in declared.items():
        key = f"{_PREFIX}.networks.{network}"
        if network not in known:
            problems.append(f"{key}: not a network RelayForge knows (known: "
                            f"{', '.join(sorted(known))})")
        elif isinstance(value, Mapping):
            problems += [f"{key}.{workspace}: got {region!r}; expected a region such as EU"
                         for workspace, region in value.items()
                         if not isinstance(region, str) or not region.strip()]
        elif not isinstance(value, str) or not value.strip():
            problems.append(f"{key}: got {value!r}; expected a region such as EU, or a "
                            "mapping of workspaces to regions")
    return problems
