"""Connectors start in the background: the bridge is ready (takes the homeserver's
transactions) without waiting for a remote network to answer. What needs a network meanwhile
(its outbound queue) waits for that network's start alone; events stay queued in the database
while it waits, so nothing is lost, and a network that never comes up holds up only itself.

A network that does not start is something only an admin can fix (a setting on the network's
side, a credential): since start-up no longer stops for it, the admins are told why, the log
says it at ERROR, and the network's status keeps the reason."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from ..networks.base import BridgeSink, Connector, ConnectorState

log = logging.getLogger("relayforge.connectors")


def start_failure_notice(network: str, reason: str) -> str:
    return (f"The {network} network did not start: {reason}. Nothing is bridged to or from "
            f"{network} until it starts; fix this and restart the bridge. The other networks "
            "are running.")


class ConnectorStarts:
    def __init__(self, connectors: dict[str, Connector],
                 sink_for: Callable[[str], BridgeSink],
                 tell_admins: Callable[[str], Awaitable[None]] | None = None) -> None:
        self.connectors = connectors
        self.sink_for = sink_for
        self.tell_admins = tell_admins
        self.failures: dict[str, str] = {}  # network -> why it did not start
        self._started = {network: asyncio.Event() for network in connectors}

    async def start_all(self) -> None:
        """Every connector at once; a failing one is logged, marked failed and the admins
        are told, the others go on."""
        await asyncio.gather(*(self._start(network, connector)
                               for network, connector in self.connectors.items()))

    async def _start(self, network: str, connector: Connector) -> None:
        try:
            await connector.start(self.sink_for(network))
        except Exception as e:
            connector.state = ConnectorState.FAILED
            reason = str(e).rstrip(".") or type(e).__name__
            self.failures[network] = reason
            log.error("The %s network did not start: %s", network, reason, exc_info=True)
            await self._tell(start_failure_notice(network, reason))
        finally:
            self._started[network].set()

    async def _tell(self, text: str) -> None:
        if self.tell_admins is None:
            return
        try:
            await self.tell_admins(text)
        except Exception:  # the notice is best effort: the log has said it already
            log.warning("Could not tell the admins that a network did not start",
                        exc_info=True)

    def status(self, network: str, state: str) -> str:
        """`state` with the reason a network did not start, for the admins' status."""
        reason = self.failures.get(network)
        return f"{state} ({reason})" if reason and state == ConnectorState.FAILED else state

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
