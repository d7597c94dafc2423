"""A bounded memory of recent ids, for what every connector needs to recognise: an event the
network delivers twice (a retry), and the echo of something the bridge itself sent."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable


class SeenIds:
    """The newest `limit` ids added; adding one more forgets the oldest. Membership and
    adding are O(1), so it can sit on every inbound event's path."""

    def __init__(self, limit: int = 5000) -> None:
        if limit < 1:
            raise ValueError("SeenIds needs room for at least one id")
        self.limit = limit
        self._ids: OrderedDict[Hashable, None] = OrderedDict()

    def add(self, key: Hashable) -> None:
        """Remember `key` as the newest (again, if it was known already)."""
        self._ids[key] = None
        self._ids.move_to_end(key)
        while len(self._ids) > self.limit:
            self._ids.popitem(last=False)

    def __contains__(self, key: object) -> bool:
        return key in self._ids

    def __len__(self) -> int:
        return len(self._ids)
