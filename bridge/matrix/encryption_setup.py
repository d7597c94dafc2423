"""Turning end-to-bridge encryption on at start-up (bridge.encryption), without importing the
Olm bindings unless it is on: they come with the optional `encryption` extra."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from typing import Any

from ..config import Config
from ..db import Storage
from ..security.vault.vault import Vault
from .appservice import BridgeAppService

log = logging.getLogger("relayforge.crypto")

# The vault field keeping the key the Olm account and sessions are pickled with.
PICKLE_KEY_FIELD = "olm_pickle_key"

NOT_INSTALLED = (
    "bridge.encryption.allow is true but the encryption libraries are not installed (%s; pip "
    "install 'relayforge[encryption]'): encrypted rooms get a notice that the bridge cannot "
    "read them")


async def start_encryption(config: Config, az: BridgeAppService, storage: Storage,
                           vault: Vault, dispatcher: Any, portals: Any,
                           is_ghost: Callable[[str], bool]) -> Any:
    """The bot's device, started and wired into the transactions, the intents, the
    dispatcher and new portals; None when encryption is off or cannot be on."""
    if not config["bridge.encryption.allow"]:
        return None
    try:
        from .crypto import BridgeCrypto, pickle_key_from
    except ImportError as e:
        if config["bridge.encryption.require"]:
            raise RuntimeError(f"bridge.encryption.require is true but {e}") from e
        log.warning(NOT_INSTALLED, e)
        return None
    from ..security.system_keys import SYSTEM_PERSONA, SYSTEM_PROFILE

    raw = await vault.open_or_create(SYSTEM_PROFILE, SYSTEM_PERSONA, PICKLE_KEY_FIELD,
                                     lambda: secrets.token_bytes(32))
    crypto = BridgeCrypto(
        server=config["homeserver.address"], bot=az.intent, as_token=az.as_token,
        db=storage.db, state_store=storage.state_store, pickle_key=pickle_key_from(raw),
        is_ghost=is_ghost, key_wait_seconds=config["bridge.encryption.key_wait_seconds"])
    await crypto.start()
    az.to_device_handler = crypto.to_device
    az.device_list_handler = crypto.device_lists
    az.otk_handler = crypto.otk_counts
    az.encryption_events = True
    az.set_encryptor(crypto)
    dispatcher.encryption = crypto
    if config["bridge.encryption.default"] or config["bridge.encryption.require"]:
        async def encrypt_new_portal(portal: Any) -> None:
            await crypto.enable_in(portal.mxid)

        portals.on_created.insert(0, encrypt_new_portal)
    return crypto
