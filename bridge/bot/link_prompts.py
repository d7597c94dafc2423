"""The bot's pending link questions ("send your password", "reply yes"), kept in the database
so that whichever worker the homeserver hands the answer to reads it as the answer.

One question per Matrix user, in the single-use table (taken once, by one worker). The link
flow's id is a capability (with it the flow goes on), so it is stored only sealed: AES-GCM
under a key the bridge keeps in its vault, bound to the user who was asked. The answer itself
is never stored.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import time

import attrs
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..db.one_time_secret import OneTimeSecretStore
from ..security.system_keys import SYSTEM_PERSONA, SYSTEM_PROFILE
from ..security.vault import Vault

KIND = "link_prompt"
_AAD_LABEL = "relayforge-link-prompt-v1"
# The row outlives the question by this much, so an answer sent too late is still recognised
# (a password redacted and "too late" said) instead of being read as a command.
LATE_SECONDS = 3600


@attrs.frozen
class Prompt:
    flow_id: str
    field: str
    secret: bool
    expired: bool
    # The login QR image the bot showed with the question (room, event, a hash of what it
    # encodes, never the code itself), so whichever worker takes the answer removes it.
    qr_shown: tuple[str, str, str] | None = None


class LinkPrompts:
    def __init__(self, one_time: OneTimeSecretStore, vault: Vault) -> None:
        self.one_time = one_time
        self.vault = vault
        self._key: bytes | None = None

    async def _aes(self) -> AESGCM:
        if self._key is None:
            self._key = await self.vault.open_or_create(
                SYSTEM_PROFILE, SYSTEM_PERSONA, "link_prompt_key", lambda: secrets.token_bytes(32))
        return AESGCM(self._key)

    @staticmethod
    def _aad(mxid: str, account_id: str) -> bytes:
        return json.dumps([_AAD_LABEL, mxid, account_id], separators=(",", ":")).encode()

    async def ask(self, mxid: str, account_id: str, flow_id: str, field: str, secret: bool,
                  seconds: float, qr_shown: tuple[str, str, str] | None = None) -> None:
        """The bot asked `mxid` for `field` of the flow: their next message answers it (a
        question asked before is replaced). `qr_shown`: the QR image shown with it."""
        nonce = os.urandom(12)
        sealed = nonce + (await self._aes()).encrypt(nonce, flow_id.encode(),
                                                     self._aad(mxid, account_id))
        payload = {"flow": base64.b64encode(sealed).decode(), "field": field, "secret": secret,
                   "deadline": int((time.time() + seconds) * 1000)}
        if qr_shown is not None:
            payload["qr"] = list(qr_shown)
        await self.one_time.ask(KIND, mxid, seconds + LATE_SECONDS, account_id=account_id,
                                mxid=mxid, payload=payload)

    async def take(self, mxid: str) -> Prompt | None:
        """The question `mxid`'s message answers, taken (no other worker gets it too); None
        when nothing was asked. A question asked too long ago comes back `expired`."""
        record = await self.one_time.answer(KIND, mxid)
        if record is None or record.mxid != mxid or record.account_id is None:
            return None
        payload = record.payload
        sealed = base64.b64decode(payload["flow"])
        expired = time.time() * 1000 > payload["deadline"]
        try:
            flow_id = (await self._aes()).decrypt(sealed[:12], sealed[12:],
                                                  self._aad(mxid, record.account_id)).decode()
        except InvalidTag:
            # Not sealed for this user (a row altered or copied): never continue that flow,
            # but the answer is still taken as one (a password is redacted, not run).
            flow_id, expired = "", True
        shown = payload.get("qr")
        qr_shown = (str(shown[0]), str(shown[1]), str(shown[2])) if (
            isinstance(shown, list) and len(shown) == 3) else None
        return Prompt(flow_id, payload["field"], bool(payload["secret"]), expired, qr_shown)
