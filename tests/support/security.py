"""Helpers for the security tests: an authenticator app, and counting repeated notices."""

from __future__ import annotations

import asyncio
import re
import time

import pyotp

from .matrix import DEADLINE, MatrixUser

_URI = re.compile(r"otpauth://\S+")


class Authenticator:
    """What a person's authenticator app does with the otpauth URI the bot showed: it makes
    codes. Each code is for a new time-step (the bridge refuses a step used before), so a
    second code within the same 30 seconds is the next step's, as a clock a little ahead
    would show."""

    def __init__(self, text_with_uri: str) -> None:
        found = _URI.search(text_with_uri)
        assert found, f"no otpauth URI in {text_with_uri!r}"
        self.uri = found.group(0)
        self.totp = pyotp.parse_uri(self.uri)
        self.secret = self.totp.secret
        self._last = -1

    def code(self) -> str:
        step = max(self.totp.timecode(time.time()), self._last + 1)
        self._last = step
        return self.totp.generate_otp(step)

    def wrong_code(self) -> str:
        """A code that is right for no step the bridge accepts now."""
        now = self.totp.timecode(time.time())
        valid = {self.totp.generate_otp(s) for s in range(now - 2, now + 4)}
        return next(c for c in (f"{n:06d}" for n in range(1000)) if c not in valid)


async def wait_for_notices(user: MatrixUser, room: str, sender: str, contains: str,
                           count: int) -> list[str]:
    """Wait until `count` messages from `sender` contain `contains` (the same answer can come
    more than once in a test); returns them, oldest first."""
    deadline = time.monotonic() + DEADLINE
    while True:
        seen = [b for b in await user.notices_from(room, sender) if contains in b]
        if len(seen) >= count:
            return seen
        if time.monotonic() > deadline:
            raise AssertionError(f"{user.mxid} saw {len(seen)} of {count} messages containing "
                                 f"{contains!r} in {room}")
        await asyncio.sleep(0.1)
