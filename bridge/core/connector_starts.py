"""Connectors start in the background: the bridge is ready (takes the homeserver's
transactions) without waiting for a remote network to answer. What needs a network meanwhile
(its outbound queue) waits for that network's start alone; events stay queued in the database
while it waits, so nothing is lost, and a network that never comes up holds up only itself."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from ..networks.base import BridgeSink, Connector, ConnectorState

log = logging.getLogger("relayforge.connectors")


class ConnectorStarts:
    def __init__(self, connectors: dict[str, Connector],
                 sink_for: Callable[[str], BridgeSink]) -> None:
        self.connectors = connectors
        self.sink_for = sink_for
        self._started = {network: asyncio.Event() for network in connectors}

    async def start_all(self) -> None:
        """Every connector at once; a failing one is logged and marked failed, the others
        go on."""
        await asyncio.gather(*(self._start(network, connector)
                               for network, connector in self.connectors.items()))

    async def _start(self, network: str, connector: Connector) -> None:
        try:
            await connector.start(self.sink_for(network))
        except Exception:
            log.exception("The %s connector did not start", network)
            connector.state = ConnectorState.FAILED
        finally:
            self._started[network].set()

    def started(self, network: str) -> bool:
        event = self._started.get(network)
        return event is None or event.is_set()

    async def wait(self, network: str) -> None:
        """Until `network`'s connector finished starting (at once for one that is not ours)."""
        event = self._started.get(network)
        if event is not None:
            await event.wait()

    async def wait_all(self) -> None:
        for event in self._started.values():
            await event.wait()
