"""Telegram for tests: the wire-level fake in its own thread (one per module), the bridge's
`networks.telegram` section pointed at it, and linking the way a person does it."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

from tests.fakes.telegram import API_HASH, API_ID, TelegramThread
from tests.fakes.telegram.world import Person

from .matrix import MatrixUser


def telegram_settings(server: TelegramThread, key_file: Path, **extra: Any) -> dict[str, Any]:
    key_file.write_text(server.fake.public_key)
    return {"enabled": True, "api_id": API_ID, "api_hash": API_HASH,
            "server": {"dc_id": server.fake.dc_id, "host": server.fake.host,
                       "port": server.fake.port, "public_key_file": str(key_file)},
            **extra}


def qr_token(prompt: str) -> bytes:
    """The login token in the tg://login link the bot showed."""
    match = re.search(r"tg://login\?token=([A-Za-z0-9_=-]+)", prompt)
    assert match, prompt
    value = match.group(1)
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


async def link_by_qr(alice: MatrixUser, bot: str, room: str, server: TelegramThread,
                     person: Person, command: str | None = "link telegram",
                     prompt: str | None = None) -> str:
    """QR login through the bot (or go on from the QR `prompt` shown), scanned by `person`'s
    phone, consented; the bot's last notice."""
    if command is not None:
        await alice.send_text(room, command)
        prompt = await alice.wait_for_notice(room, bot, "Scan this QR code")
    assert prompt is not None
    await server.run(server.fake.accept_qr(qr_token(prompt), person))
    await alice.send_text(room, "done")
    await alice.wait_for_notice(room, bot, "Reply yes to link")
    await alice.send_text(room, "yes")
    return await alice.wait_for_notice(room, bot, f"Linked telegram:{person.id}")
