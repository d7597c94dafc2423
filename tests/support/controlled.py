"""A test-only network the tests can break on purpose: down, rate-limiting (429 with a
Retry-After), or refusing a person's revoked credentials. It has accounts with passwords, so
people link it through the bridge's real linking flow (proof, consent) like any network.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import attrs

from bridge.networks.base import (
    CredentialsRejected,
    MatrixEdit,
    MatrixMessage,
    MatrixReaction,
    MatrixRedaction,
    RateLimited,
    SendResult,
)
from bridge.networks.login import Field, LinkedAccount, LoginFailed, LoginStep

from .loopback import LoopbackConnector
from .matrix import DEADLINE


@attrs.define
class Attempt:
    at: float
    text: str
    outcome: str  # "sent", "down", "rate_limited", "revoked"


class ControlledConnector(LoopbackConnector):
    def __init__(self, requires_authorization: bool = True) -> None:
        super().__init__(requires_authorization=requires_authorization)
        self.passwords: dict[str, str] = {}
        self.revoked: set[str] = set()  # users whose credentials the network no longer takes
        self.sessions: dict[str, dict[str, str]] = {}  # persona id -> credentials in use
        self.users: dict[str, str] = {}  # persona id -> remote user
        self.down = False
        self.rate_limited_until = 0.0
        self.retry_after = 1.0
        self.attempts: list[Attempt] = []
        self.sent: list[MatrixMessage] = []
        self._attempted = asyncio.Event()

    async def wait_until(self, condition: Callable[[], bool], what: str) -> None:
        """Wait until `condition` holds after some send attempt; fails naming `what`."""
        try:
            async with asyncio.timeout(DEADLINE):
                while not condition():
                    self._attempted.clear()
                    await self._attempted.wait()
        except TimeoutError:
            raise AssertionError(f"never happened: {what}") from None

    def add_account(self, user: str, password: str) -> None:
        self.passwords[user] = password
        self.revoked.discard(user)

    def revoke(self, user: str, new_password: str) -> None:
        """The person's access is revoked on the network (say, a password change)."""
        self.revoked.add(user)
        self.passwords[user] = new_password

    # ---- linking ------------------------------------------------------------------------

    def login_flows(self) -> list[str]:
        return ["password"]

    async def begin_login(self, identifier: str | None) -> LoginStep:
        if not identifier or identifier not in self.passwords:
            raise LoginFailed(f'"{identifier}" has no account on this network.')
        return LoginStep(message=f"Send the password of {identifier}.",
                         state={"user": identifier},
                         fields=[Field("password", f"Password of {identifier}", secret=True)])

    async def continue_login(self, state: dict[str, Any], answers: dict[str, str]
                             ) -> LoginStep | LinkedAccount:
        user = state["user"]
        if answers.get("password") != self.passwords.get(user):
            raise LoginFailed("Wrong password. Nothing was stored.")
        self.revoked.discard(user)
        return LinkedAccount(user, user.title(), ["send"], {"password": answers["password"]},
                             [f"signed in as {user}"])

    async def open_session(self, persona_id: str, external_user_id: str,
                           credentials: dict[str, str], owner: str) -> None:
        self.sessions[persona_id] = credentials
        self.users[persona_id] = external_user_id

    async def close_session(self, persona_id: str) -> None:
        self.sessions.pop(persona_id, None)

    async def revoke_access(self, external_user_id: str, credentials: dict[str, str]) -> bool:
        """Like an OAuth revocation endpoint: the credential stops working here."""
        if self.passwords.get(external_user_id) != credentials.get("password"):
            return False
        self.revoked.add(external_user_id)
        return True

    # ---- sending --------------------------------------------------------------------------

    def _check(self, event: Any, text: str) -> None:
        self._attempted.set()
        now = time.time()
        persona = event.persona_id  # set by `deliver` from the verified token
        user = self.users.get(persona) if persona else None
        if user is not None and (user in self.revoked
                                 or self.sessions.get(persona, {}).get("password")
                                 != self.passwords.get(user)):
            self.attempts.append(Attempt(now, text, "revoked"))
            raise CredentialsRejected(f"{user}: token_revoked")
        if self.down:
            self.attempts.append(Attempt(now, text, "down"))
            raise ConnectionError("the network is down")
        if now < self.rate_limited_until:
            self.attempts.append(Attempt(now, text, "rate_limited"))
            raise RateLimited(self.retry_after)
        self.attempts.append(Attempt(now, text, "sent"))

    async def send_message(self, event: MatrixMessage) -> SendResult:
        self._check(event, event.text)
        self.sent.append(event)
        self._attempted.set()
        return await super().send_message(event)

    async def send_edit(self, event: MatrixEdit) -> None:
        self._check(event, event.text)
        await super().send_edit(event)

    async def send_redaction(self, event: MatrixRedaction) -> None:
        self._check(event, "(redaction)")
        await super().send_redaction(event)

    async def send_reaction(self, event: MatrixReaction) -> SendResult:
        self._check(event, event.key)
        return await super().send_reaction(event)
