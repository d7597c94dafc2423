"""Calls between bridge workers (bridge/core/workers.py): work only one worker can do (the
sessions of a network it serves, a half-done login in its memory) is handed to it over the
workers' LISTEN/NOTIFY link, sealed, and its answer awaited."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import Awaitable, Callable
from typing import Any

import attrs


class CallFailed(Exception):
    """Another worker did not take or finish a call; the message says what happened, in
    words for the person ("did not answer")."""


# A call's handler: the call's arguments -> its answer (both JSON objects). A refusal the
# person should read goes in the answer ({"refused": ...}); an exception becomes "failed".
CallHandler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
_SEAL_LABEL = "relayforge-worker-call-v1"


class CallSeal:
    """Seals a call or answer for the channel: AES-GCM under a key from the vault (every
    worker opens the same one), bound to the call id, its direction and both workers."""

    def __init__(self, key: Callable[[], Awaitable[bytes]]) -> None:
        self._get_key = key
        self._key: bytes | None = None

    async def _aes(self) -> Any:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # not for the config

        if self._key is None:
            self._key = await self._get_key()
        return AESGCM(self._key)

    @staticmethod
    def _aad(call_id: str, direction: str, sender: str, receiver: str) -> bytes:
        return json.dumps([_SEAL_LABEL, call_id, direction, sender, receiver],
                          separators=(",", ":")).encode()

    async def seal(self, call_id: str, direction: str, sender: str, receiver: str,
                   body: dict[str, Any]) -> str:
        nonce = os.urandom(12)
        sealed = (await self._aes()).encrypt(nonce, json.dumps(body).encode(),
                                             self._aad(call_id, direction, sender, receiver))
        return base64.b64encode(nonce + sealed).decode()

    async def open(self, call_id: str, direction: str, sender: str, receiver: str,
                   sealed: str) -> dict[str, Any]:
        """The body; raises ValueError if it was not sealed for exactly this."""
        from cryptography.exceptions import InvalidTag

        raw = base64.b64decode(sealed)
        try:
            plain = (await self._aes()).decrypt(raw[:12], raw[12:], self._aad(
                call_id, direction, sender, receiver))
        except InvalidTag:
            raise ValueError("a worker call that was not sealed for this") from None
        body = json.loads(plain)
        if not isinstance(body, dict):
            raise ValueError("a worker call that is not an object")
        return body


@attrs.define
class PendingCall:
    """A call this worker made, waiting for its answer."""

    worker: str
    taken: asyncio.Event = attrs.field(factory=asyncio.Event)
    answer: asyncio.Future[dict[str, Any]] = attrs.field(
        factory=lambda: asyncio.get_running_loop().create_future())
