"""Who may do what: `bridge.permissions` maps "*", a server or a user to a level.

One module for the bot, the provisioning API and the pages, so an action needs the same level
whichever way it is asked for.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from enum import IntEnum


class Level(IntEnum):
    NONE = 0
    RELAY = 1
    USER = 2
    ADMIN = 3

    @classmethod
    def parse(cls, name: str) -> Level:
        return cls[name.upper()]

    @property
    def label(self) -> str:
        return self.name.lower()


# The level each action needs, wherever it comes from (bot command, API endpoint, page).
# The bot answers nobody below `user`; the API and pages follow the same table.
ACTION_LEVELS: dict[str, Level] = {
    "account": Level.USER,     # see the account, profiles, sign-ins
    "profiles": Level.USER,    # create, rename, delete profiles
    "link": Level.USER,        # link, relink, consent to a network account
    "personas": Level.USER,    # list, pause, resume, revoke, unlink linked accounts
    "map": Level.USER,         # add mapping rules (bridge a remote room)
    "rules": Level.USER,       # list and remove mapping rules
    "my_data": Level.USER,     # export everything the bridge holds about oneself
    "forget": Level.USER,      # forget-me: erase oneself (refused under a legal hold)
    "admin": Level.ADMIN,      # support tools: find, merge and unmerge any account
    "agents": Level.USER,      # authorise an AI agent (MCP), and every act of one
    "holds": Level.ADMIN,      # legal holds: create, list, release, export
}

# A user ID as the spec's grammar has it: historical localparts are any printable ASCII
# but ":"; the server is a DNS name, IPv4 or [IPv6] literal, with an optional port.
_USER_ID = re.compile(
    r"@[\x21-\x39\x3B-\x7E]+:"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}"
    r"[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?")


def is_user_id(value: str) -> bool:
    return len(value) <= 255 and _USER_ID.fullmatch(value) is not None


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

    def best_of(self, mxids: Iterable[str]) -> tuple[str | None, Level]:
        """For an account signed in on the web: its Matrix user with the highest level (the
        person proved each of them). An account with no Matrix user gets what "*" allows."""
        best: tuple[str | None, Level] = (None, self._rules.get("*", Level.NONE))
        for index, mxid in enumerate(mxids):
            level = self.level_for(mxid)
            if index == 0 or level > best[1]:
                best = (mxid, level)
        return best

    @staticmethod
    def refusal(action: str, who: str | None, level: Level) -> str | None:
        """Why `who` (at `level`) may not do `action`, or None when they may."""
        needed = ACTION_LEVELS[action]
        if level >= needed:
            return None
        subject = who or "An account without a Matrix user"
        return (f'"{action}" needs the {needed.label} permission level in '
                f"bridge.permissions; {subject} has {level.label}.")
