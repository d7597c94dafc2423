"""Ghosts: the Matrix users that speak for remote users, one per (network, remote id)."""

from __future__ import annotations

import hashlib
import re
import string
from collections import OrderedDict

from mautrix.appservice import IntentAPI
from mautrix.types import UserID

from ..db import Puppet, PuppetStore
from ..networks.base import RemoteUser

_PLAIN = set(string.ascii_lowercase + string.digits + ".-/")

#: Ghost intents kept, for the senders who spoke last. Making one (mautrix wraps each of its
#: methods anew) cost about a tenth of the bridge's own time per relayed message; the oldest
#: is dropped past this many and made again if its sender speaks again.
INTENTS_KEPT = 1000


def escape_localpart(remote_id: str) -> str:
    """Map any remote id to a valid, reversible Matrix localpart (the spec's suggested scheme)."""
    out = []
    for char in remote_id:
        if char in _PLAIN:
            out.append(char)
        elif char == "_":
            out.append("__")
        elif "A" <= char <= "Z":
            out.append("_" + char.lower())
        else:
            out.extend(f"={byte:02x}" for byte in char.encode())
    return "".join(out)


def unescape_localpart(localpart: str) -> str:
    result = bytearray()
    i = 0
    while i < len(localpart):
        char = localpart[i]
        if char == "_" and i + 1 < len(localpart):
            nxt = localpart[i + 1]
            result += b"_" if nxt == "_" else nxt.upper().encode()
            i += 2
        elif char == "=":
            result.append(int(localpart[i + 1:i + 3], 16))
            i += 3
        else:
            result += char.encode()
            i += 1
    return result.decode()


class GhostTemplate:
    """One network's `username_template` and `displayname_template`."""

    def __init__(self, network: str, username: str, displayname: str, domain: str) -> None:
        self.network = network
        self.displayname = displayname
        self.domain = domain
        before, after = username.split("{id}")
        self._before, self._after = before, after
        self._pattern = re.compile(
            f"^@{re.escape(before)}(.+){re.escape(after)}:{re.escape(domain)}$"
        )

    def mxid(self, remote_id: str) -> UserID:
        return UserID(f"@{self._before}{escape_localpart(remote_id)}{self._after}:{self.domain}")

    def remote_id(self, mxid: str) -> str | None:
        match = self._pattern.match(mxid)
        return unescape_localpart(match.group(1)) if match else None

    def display_name(self, user: RemoteUser) -> str:
        return self.displayname.format(displayname=user.display_name or user.remote_id)


class Ghosts:
    def __init__(self, bot_intent: IntentAPI, store: PuppetStore,
                 templates: dict[str, GhostTemplate]) -> None:
        self.bot_intent = bot_intent
        self.store = store
        self.templates = templates
        # Puppet rows by (network, remote id), kept once read or written: every relayed
        # message checks its sender's name and avatar. Only `ensure` writes the puppet table.
        # One small row per remote user who spoke, like the intents mautrix keeps.
        self._known: dict[tuple[str, str], Puppet] = {}
        self._intents: OrderedDict[UserID, IntentAPI] = OrderedDict()

    def is_ghost(self, mxid: str) -> bool:
        return any(t.remote_id(mxid) is not None for t in self.templates.values())

    def ghost_mxid(self, network: str, remote_id: str) -> UserID:
        return self.templates[network].mxid(remote_id)

    def ghost_remote_id(self, network: str, mxid: str) -> str | None:
        return self.templates[network].remote_id(mxid)

    def intent_for(self, mxid: UserID) -> IntentAPI:
        intent = self._intents.get(mxid)
        if intent is not None:
            self._intents.move_to_end(mxid)
            return intent
        intent = self._intents[mxid] = self.bot_intent.user(mxid)
        if len(self._intents) > INTENTS_KEPT:
            self._intents.popitem(last=False)
        return intent

    async def ensure(self, network: str, user: RemoteUser) -> IntentAPI:
        """The ghost's intent, registered and with its current display name."""
        template = self.templates[network]
        mxid = template.mxid(user.remote_id)
        intent = self.intent_for(mxid)
        known = await self._puppet(network, user.remote_id)
        displayname = template.display_name(user)
        avatar_hash = (hashlib.sha256(user.avatar.data).hexdigest() if user.avatar
                       else known.avatar_hash if known else None)
        avatar_url = known.avatar_url if known else None
        changed_name = known is None or known.displayname != displayname
        changed_avatar = user.avatar is not None and (known is None
                                                      or known.avatar_hash != avatar_hash)
        if changed_name or changed_avatar:
            await intent.ensure_registered()
        if changed_name:
            await intent.set_displayname(displayname, check_current=False)
        if changed_avatar and user.avatar is not None:
            avatar_url = await intent.upload_media(user.avatar.data,
                                                   mime_type=user.avatar.mimetype,
                                                   filename=user.avatar.name)
            await intent.set_avatar_url(avatar_url, check_current=False)
        if changed_name or changed_avatar:
            puppet = Puppet(network, user.remote_id, mxid, displayname, avatar_url, avatar_hash)
            await self.store.upsert(puppet)
            self._known[(network, user.remote_id)] = puppet
        return intent

    async def _puppet(self, network: str, remote_id: str) -> Puppet | None:
        known = self._known.get((network, remote_id))
        if known is not None:
            return known
        known = await self.store.get(network, remote_id)
        if known is not None:
            # setdefault: an `ensure` that wrote a newer row while this read waited wins.
            known = self._known.setdefault((network, remote_id), known)
        return known
