"""Making Telethon clients for the bridge, and what Telegram's refusals mean to the core.

A session lives only in memory (`StringSession`) and in the vault: never a .session file.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..lazy import lazy

if TYPE_CHECKING:
    import telethon
    from telethon import errors, sessions
    from telethon.crypto import rsa
else:
    # Telethon is imported when the first session opens or the first login starts.
    telethon, errors = lazy("telethon"), lazy("telethon.errors")
    rsa, sessions = lazy("telethon.crypto.rsa"), lazy("telethon.sessions")

log = logging.getLogger("relayforge.telegram")


def session_gone() -> tuple[type[Exception], ...]:
    """Refusals that mean the session is gone for good: read-only until the person
    relinks. (A function: naming them imports Telethon.)"""
    return (errors.AuthKeyUnregisteredError, errors.SessionRevokedError,
            errors.SessionExpiredError, errors.UserDeactivatedError,
            errors.UserDeactivatedBanError, errors.AuthKeyDuplicatedError,
            errors.AuthKeyInvalidError)


_trusted_keys: set[str] = set()


def trust_server_key(settings: Mapping[str, Any]) -> None:
    """A non-default server's RSA key (networks.telegram.server.public_key_file): Telethon
    trusts Telegram's own keys only, and an extra one through `rsa.add_key`."""
    path = (settings.get("server") or {}).get("public_key_file")
    if path and path not in _trusted_keys:
        rsa.add_key(Path(path).read_text(), old=False)
        _trusted_keys.add(path)


def make_client(settings: Mapping[str, Any], session: str = "", *,
                api_id: int | None = None, api_hash: str | None = None,
                catch_up: bool = False) -> telethon.TelegramClient:
    """`catch_up`: on connect, getDifference from the update state put in the session
    (a linked person's session after a restart) before any new update."""
    trust_server_key(settings)
    client = telethon.TelegramClient(
        sessions.StringSession(session), api_id or settings.get("api_id") or 0,
        api_hash or settings.get("api_hash") or "",
        # FLOOD_WAIT is the delivery queue's to wait out (RateLimited), never a sleep in a
        # send path; and no endless reconnecting to a session that was revoked.
        flood_sleep_threshold=0, connection_retries=5, retry_delay=1, auto_reconnect=True,
        request_retries=2, device_model="RelayForge", app_version="RelayForge bridge",
        # One update after another: messages reach Matrix in the order Telegram gave them.
        sequential_updates=True, catch_up=catch_up,
        system_version="Matrix bridge", receive_updates=True)
    server = settings.get("server")
    if server and not session:
        client.session.set_dc(int(server.get("dc_id", 2)), server["host"],
                              int(server.get("port", 443)))
    return client


def error_name(error: Exception) -> str:
    """Telegram's own name of an error (SessionRevokedError -> SESSION_REVOKED), which
    Telethon keeps only in the class name for the errors it knows."""
    name = type(error).__name__.removesuffix("Error")
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).upper()


def save(client: telethon.TelegramClient) -> str:
    """The session (data centre, address and auth key) as the string sealed in the vault."""
    return sessions.StringSession.save(client.session)
