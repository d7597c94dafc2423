"""A wire-level fake of Telegram's servers (MTProto 2.0 over TCP) for the unmodified Telethon."""

from .server import API_HASH, API_ID, FakeTelegram
from .thread import TelegramThread

__all__ = ["API_HASH", "API_ID", "FakeTelegram", "TelegramThread"]
