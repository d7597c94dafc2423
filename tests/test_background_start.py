"""Connectors start in the background: the bridge is ready before a slow network has started,
and what people send meanwhile waits in the queue and reaches the network once, when it is up;
people's sessions open after ready, so a network slow to open them does not hold the bridge
up (real Synapse, both databases)."""

from __future__ import annotations

import asyncio

from bridge.app import Bridge
from bridge.networks.base import BridgeSink, MatrixMessage, RemoteMessage, SendResult

from .support.controlled import ControlledConnector
from .support.loopback import LoopbackConnector
from .test_delivery import linked_portal
from .test_portal_routing import remote_names


class SlowStartLoopback(LoopbackConnector):
    """A loopback network whose start waits until the test lets it finish, like a network
    whose servers answer slowly; before that it cannot send (as a real one has no client)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.started = False
        self.sent_before_start: list[str] = []

    async def start(self, sink: BridgeSink) -> None:
        await self.release.wait()
        await super().start(sink)
        self.started = True

    async def send_message(self, event: MatrixMessage) -> SendResult:
        if not self.started:
            self.sent_before_start.append(event.text)
            raise ConnectionError("not connected yet")
        return await super().send_message(event)


async def test_ready_before_a_slow_network_and_its_messages_wait_for_it(
        start_bridge, new_user, homeserver, tmp_path, db_uri):
    first = await start_bridge()
    alice = await new_user("alice")
    room, rita = remote_names()
    await first.connectors["loopback"].emit(RemoteMessage(
        room=room, sender=rita, receiver=alice.mxid, message_id="r-1", text="hello"))
    portal = await alice.wait_for_invite()
    await first.stop()

    slow = SlowStartLoopback()
    bridge = Bridge(homeserver.bridge_config(tmp_path, db_uri), [slow])
    try:
        await bridge.start()  # returns although the network has not started
        assert bridge.appservice is not None and bridge.appservice.ready
        assert not slow.started
        await alice.send_text(portal, "sent while the network starts")
        # The bot answers while the network is still starting.
        await alice.open_management_room(homeserver.bot_mxid)
        assert not slow.started

        slow.release.set()
        sent = await slow.next_received()
        assert isinstance(sent, MatrixMessage) and sent.text == "sent while the network starts"
        await alice.send_text(portal, "after the start")
        again = await slow.next_received()
        assert isinstance(again, MatrixMessage) and again.text == "after the start"  # once
        assert slow.sent_before_start == []
    finally:
        await bridge.stop()


class SlowSessionNetwork(ControlledConnector):
    """A network whose people's sessions take until the test lets them open, like a remote
    server that is slow to sign thousands of people in."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.opened = asyncio.Event()

    async def open_session(self, persona_id: str, external_user_id: str,
                           credentials: dict[str, str], owner: str) -> None:
        await self.release.wait()
        await super().open_session(persona_id, external_user_id, credentials, owner)
        self.opened.set()


async def test_ready_and_answering_before_people_s_sessions_open(
        start_bridge, new_user, homeserver, tmp_path, db_uri):
    network = ControlledConnector()
    first = await start_bridge([network])
    alice = await new_user("alice")
    room, _ = await linked_portal(network, alice, homeserver, "ann")
    await first.stop()

    slow = SlowSessionNetwork()
    slow.add_account("ann", "pw-1")
    bridge = Bridge(homeserver.bridge_config(tmp_path, db_uri), [slow])
    try:
        await bridge.start()  # returns although ann's session has not opened
        assert bridge.appservice is not None and bridge.appservice.ready
        await alice.send_text(room, "ping")
        await alice.wait_for_notice(room, homeserver.bot_mxid, "Pong")
        assert slow.sessions == {}

        slow.release.set()
        await slow.opened.wait()
        assert list(slow.users.values()) == ["ann"]
    finally:
        await bridge.stop()
