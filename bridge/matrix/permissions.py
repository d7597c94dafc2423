"""Who may use the bridge: `bridge.permissions` maps "*", a server or a user to a level."""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum


class Level(IntEnum):
    NONE = 0
    RELAY = 1
    USER = 2
    ADMIN = 3

    @classmethod
    def parse(cls, name: str) -> Level:
        return cls[name.upper()]


class Permissions:
    def __init__(self, rules: Mapping[str, str]) -> None:
        self._rules = {who: Level.parse(level) for who, level in rules.items()}

    def level_for(self, mxid: str) -> Level:
        """The most specific rule wins: the user, then their server, then "*"."""
        if mxid in self._rules:
            return self._rules[mxid]
        server = mxid.split(":", 1)[1] if ":" in mxid else ""
        if server in self._rules:
            return self._rules[server]
        return self._rules.get("*", Level.NONE)
