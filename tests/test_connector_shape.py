"""What `networks.base.Connector` does for every connector (the sink, the start/stop state,
emit) and the one bounded memory of ids connectors share, seen from a connector's side."""

from __future__ import annotations

import pytest

from bridge.networks.base import (
    Connector,
    ConnectorState,
    MatrixEdit,
    MatrixMessage,
    MatrixReaction,
    MatrixRedaction,
    RemoteEvent,
    RemoteRoom,
    RemoteTyping,
    RemoteUser,
    SendResult,
)
from bridge.networks.seen import SeenIds


class Sink:
    def __init__(self) -> None:
        self.events: list[RemoteEvent] = []

    async def handle_remote_event(self, event: RemoteEvent) -> None:
        self.events.append(event)

    def ghost_mxid(self, remote_user_id: str) -> str:
        return f"@tiny_{remote_user_id}:example.org"

    async def remote_user_for(self, mxid: str) -> str | None:
        return None


class TinyConnector(Connector):
    """A network that only needs `connect` and the four sends."""

    network = "tiny"

    def __init__(self, refuse: bool = False) -> None:
        super().__init__()
        self.refuse = refuse
        self.states: list[ConnectorState] = []
        self.closed = False

    async def connect(self) -> None:
        self.states.append(self.state)
        if self.refuse:
            raise ConnectionRefusedError("no")

    async def disconnect(self) -> None:
        self.closed = True

    async def send_message(self, event: MatrixMessage) -> SendResult:
        return SendResult("1")

    async def send_edit(self, event: MatrixEdit) -> None:
        return None

    async def send_redaction(self, event: MatrixRedaction) -> None:
        return None

    async def send_reaction(self, event: MatrixReaction) -> SendResult:
        return SendResult("2")


TYPING = RemoteTyping(room=RemoteRoom("r"), sender=RemoteUser("u"), typing=True)


async def test_the_connector_keeps_the_sink_and_its_state():
    connector, sink = TinyConnector(), Sink()
    with pytest.raises(RuntimeError, match="tiny connector is not started"):
        await connector.emit(TYPING)
    await connector.start(sink)
    assert connector.states == [ConnectorState.CONNECTING]
    assert connector.state is ConnectorState.CONNECTED
    await connector.emit(TYPING)
    assert sink.events == [TYPING]
    await connector.stop()
    assert connector.closed and connector.state is ConnectorState.STOPPED


async def test_a_connector_that_cannot_connect_is_failed():
    connector = TinyConnector(refuse=True)
    with pytest.raises(ConnectionRefusedError):
        await connector.start(Sink())
    assert connector.state is ConnectorState.FAILED


def test_seen_ids_keep_the_newest():
    seen = SeenIds(3)
    for key in ("a", "b", "c"):
        seen.add(key)
    seen.add("a")  # seen again: the newest now
    seen.add("d")
    assert [k in seen for k in ("a", "b", "c", "d")] == [True, False, True, True]
    assert len(seen) == 3
    with pytest.raises(ValueError):
        SeenIds(0)
