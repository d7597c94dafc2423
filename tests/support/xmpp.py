"""XMPP people for tests: real client sessions on the test Prosody."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable

from slixmpp import JID, Message
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import StanzaPath

from bridge.networks.xmpp.client import XmppClient

from .matrix import DEADLINE
from .prosody import ProsodyServer


class XmppPeer:
    def __init__(self, server: ProsodyServer, name: str) -> None:
        self.password = secrets.token_urlsafe(12)
        self.jid = server.register(f"{name}{secrets.token_hex(3)}", self.password)
        self.client = XmppClient(f"{self.jid}/test", self.password, ca_file=str(server.ca),
                                 nameserver=server.nameserver)
        self.messages: list[Message] = []
        self._arrived = asyncio.Event()
        # Every message stanza, not only those with a body (slixmpp's "message" event).
        self.client.register_handler(Callback("test messages", StanzaPath("message"),
                                              self._on_message))

    @property
    def nick(self) -> str:
        return JID(self.jid).user

    def _on_message(self, msg: Message) -> None:
        self.messages.append(msg)
        self._arrived.set()

    async def start(self) -> None:
        started = asyncio.Event()

        def on_start(_: object) -> None:
            started.set()

        self.client.add_event_handler("session_start", on_start)
        self.client.connect()
        async with asyncio.timeout(DEADLINE):
            await started.wait()
        self.client.del_event_handler("session_start", on_start)
        self.client.send_presence()

    async def reconnect(self) -> None:
        """Connect again (after the server restarted) with the same account."""
        self.client.disconnect()
        await asyncio.sleep(0.2)
        await self.start()

    async def join(self, room: str) -> None:
        await self.client.plugin["xep_0045"].join_muc_wait(JID(room), self.nick, maxstanzas=0,
                                                          timeout=DEADLINE)

    def send(self, to: str, body: str, kind: str = "groupchat",
             **extra: Callable[[Message], None]) -> str:
        msg = self.client.make_message(mto=JID(to), mbody=body, mtype=kind)
        msg["id"] = secrets.token_hex(8)
        for change in extra.values():
            change(msg)
        msg.send()
        return msg["id"]

    async def wait_for(self, matches: Callable[[Message], bool], what: str) -> Message:
        async with asyncio.timeout(DEADLINE):
            while True:
                for msg in self.messages:
                    if matches(msg):
                        return msg
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), 1)
                except TimeoutError:
                    continue
        raise AssertionError(f"{self.jid} never received {what}")

    async def stop(self) -> None:
        self.client.disconnect()
