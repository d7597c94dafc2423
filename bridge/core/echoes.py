"""Echoes the bridge expects: what it did as someone comes back from the homeserver as that
person's own act, and must not be bridged out again."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable


class Expected:
    """Keys the bridge expects to see come back once, each taken when it does; bounded, so
    echoes that never arrive are forgotten."""

    def __init__(self, limit: int = 1000) -> None:
        self.limit = limit
        self._keys: OrderedDict[Hashable, None] = OrderedDict()

    def add(self, key: Hashable) -> None:
        self._keys[key] = None
        self._keys.move_to_end(key)
        while len(self._keys) > self.limit:
            self._keys.popitem(last=False)

    def take(self, key: Hashable) -> bool:
        """Whether `key` was expected (and is no longer)."""
        if key not in self._keys:
            return False
        del self._keys[key]
        return True
