"""Linking a Telegram account as the person's own session: a QR code scanned with "Link
desktop device", or the phone number, the code Telegram sent, and the cloud password (SRP;
never stored).

The half-done login (a connected client with its own new auth key) stays in memory, named in
the flow's state by a random handle: the state the core stores holds nothing secret, and
nothing reaches the vault before the login succeeded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..lazy import lazy
from ..login import Field, LinkedAccount, LoginFailed, LoginStep
from .client import error_name, make_client, save

if TYPE_CHECKING:
    from telethon import TelegramClient, errors
    from telethon.tl.custom.qrlogin import QRLogin
else:
    errors = lazy("telethon.errors")  # imported when the first login starts

log = logging.getLogger("relayforge.telegram.login")
ATTEMPT_SECONDS = 15 * 60  # as long as the core keeps a link flow
MAX_TRIES = 3
PHONE = re.compile(r"^\+?[0-9][0-9 ()-]{5,20}$")


class Attempt:
    def __init__(self, client: TelegramClient | None, kind: str) -> None:
        self.client = client
        self.kind = kind
        self.started = time.monotonic()
        self.phone = ""
        self.code_hash = ""
        self.tries = 0
        self.qr: QRLogin | None = None
        self.scanned: asyncio.Task[Any] | None = None
        self.api: tuple[int, str] | None = None

    @property
    def tg(self) -> TelegramClient:
        """The login's client (there is one from the first step that talks to Telegram)."""
        assert self.client is not None
        return self.client


def _wait_words(seconds: int) -> str:
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"


class TelegramLogin:
    def __init__(self, settings: Mapping[str, Any]) -> None:
        self.settings = settings
        self.attempts: dict[str, Attempt] = {}

    # ---- steps -------------------------------------------------------------------------------

    async def begin(self, identifier: str | None) -> LoginStep:
        self._prune()
        phone = (identifier or "").strip()
        # "relink telegram:<user id>" names the account by its id: it proves itself by QR.
        relink = phone.isdigit()
        if phone and not relink and phone.lower() != "qr" and not (
                phone.startswith("+") and PHONE.match(phone)):
            raise LoginFailed(f'"{identifier}" is not a phone number: write it with the country '
                              'code, like "link telegram +4712345678", or "link telegram" to '
                              "scan a QR code.")
        handle = secrets.token_urlsafe(16)
        kind = "phone" if phone.startswith("+") else "qr"
        if self.settings.get("require_own_api_id"):
            attempt = Attempt(None, kind)  # no client before the person's own API id
            attempt.phone = re.sub(r"[^0-9+]", "", phone)
            self.attempts[handle] = attempt
            return LoginStep(
                message="This bridge links Telegram accounts with their owner's own API id "
                        "(from my.telegram.org > API development tools). Send your api_id and "
                        "api_hash, separated by a space.",
                state={"attempt": handle, "step": "api"},
                fields=[Field("api", "api_id api_hash", secret=True)])
        return await self._first_step(handle, kind, re.sub(r"[^0-9+]", "", phone), None)

    async def _first_step(self, handle: str, kind: str, phone: str,
                          api: tuple[int, str] | None) -> LoginStep:
        client = make_client(self.settings, api_id=api[0] if api else None,
                             api_hash=api[1] if api else None)
        attempt = Attempt(client, kind)
        attempt.api = api
        try:
            await client.connect()
            if kind == "qr":
                step = await self._qr_step(handle, attempt, first=True)
            else:
                step = await self._send_code(handle, attempt, phone)
        except BaseException:
            await client.disconnect()
            raise
        self.attempts[handle] = attempt
        return step

    async def _qr_step(self, handle: str, attempt: Attempt, first: bool) -> LoginStep:
        try:
            attempt.qr = await attempt.tg.qr_login()
        except errors.FloodWaitError as e:
            raise LoginFailed(f"Telegram asks to wait {_wait_words(e.seconds)} before the next "
                              "login attempt. Nothing was stored.") from e
        except errors.ApiIdInvalidError as e:
            raise LoginFailed("Telegram refused the API id and hash. Nothing was stored.") from e
        # Waiting starts now: the phone may accept the code before the person answers.
        expires = max(1.0, (attempt.qr.expires.timestamp() - time.time()))
        attempt.scanned = asyncio.create_task(attempt.qr.wait(timeout=expires))
        attempt.scanned.add_done_callback(lambda t: t.cancelled() or t.exception())
        lead = ("Scan this QR code" if first else "The QR code expired; scan this new one")
        return LoginStep(
            message=f"{lead} with Telegram on your phone: Settings > Devices > Link Desktop "
                    "Device (or open the tg://login link on a device where you are signed "
                    "in). Then reply done. To link with your phone number instead, send "
                    '"link telegram +<number>".',
            state={"attempt": handle, "step": "qr"}, url=attempt.qr.url, qr=attempt.qr.url,
            fields=[Field("done", "done, once the code was scanned")])

    async def _send_code(self, handle: str, attempt: Attempt, phone: str) -> LoginStep:
        attempt.phone = phone
        try:
            sent = await attempt.tg.send_code_request(phone)
        except errors.PhoneNumberInvalidError as e:
            raise LoginFailed(f"Telegram knows no account with the number {phone}. Nothing "
                              "was stored.") from e
        except (errors.PhoneNumberBannedError, errors.PhoneNumberFloodError) as e:
            raise LoginFailed(f"Telegram refuses logins for {phone} ({error_name(e)}). Nothing "
                              "was stored.") from e
        except errors.FloodWaitError as e:
            raise LoginFailed(f"Telegram asks to wait {_wait_words(e.seconds)} before sending "
                              "another code. Nothing was stored.") from e
        except errors.ApiIdInvalidError as e:
            raise LoginFailed("Telegram refused the API id and hash. Nothing was stored.") from e
        attempt.code_hash = sent.phone_code_hash
        return LoginStep(
            message=f"Telegram sent a login code to the Telegram app of {phone}. Send the "
                    "code.", state={"attempt": handle, "step": "code"},
            fields=[Field("code", "the login code", secret=True)])

    async def next(self, state: dict[str, Any], answers: Mapping[str, str]
                   ) -> LoginStep | LinkedAccount:
        handle = state.get("attempt", "")
        attempt = self.attempts.get(handle)
        if attempt is None:
            raise LoginFailed('This Telegram login is no longer in progress (the bridge '
                              'restarted, or it took too long): start again with "link '
                              'telegram". Nothing was stored.')
        step = state.get("step")
        try:
            if step == "api":
                return await self._api_answered(handle, attempt, answers.get("api", ""))
            if step == "qr":
                return await self._qr_answered(handle, attempt)
            if step == "code":
                return await self._code_answered(handle, attempt, answers.get("code", ""))
            if step == "password":
                return await self._password_answered(handle, attempt,
                                                     answers.get("password", ""))
        except LoginFailed:
            await self.cancel(handle)
            raise
        raise LoginFailed("Unknown Telegram login step.")

    async def _api_answered(self, handle: str, attempt: Attempt, answer: str) -> LoginStep:
        parts = answer.split()
        if len(parts) != 2 or not parts[0].isdigit() or not re.fullmatch(r"[0-9a-fA-F]{32}",
                                                                          parts[1]):
            raise LoginFailed("That is not an api_id (a number) and an api_hash (32 hex "
                              "digits) separated by a space. Nothing was stored.")
        del self.attempts[handle]
        return await self._first_step(handle, attempt.kind, attempt.phone,
                                      (int(parts[0]), parts[1].lower()))

    async def _qr_answered(self, handle: str, attempt: Attempt) -> LoginStep | LinkedAccount:
        assert attempt.scanned is not None
        if not attempt.scanned.done():
            # Give a phone that is just accepting a moment.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(attempt.scanned), 3)
        if not attempt.scanned.done():
            return LoginStep(
                message="The QR code was not scanned yet. Scan it, then reply done.",
                state={"attempt": handle, "step": "qr"}, url=attempt.qr.url if attempt.qr
                else None, qr=attempt.qr.url if attempt.qr else None,
                fields=[Field("done", "done, once the code was scanned")])
        error = attempt.scanned.exception()
        if isinstance(error, TimeoutError | asyncio.TimeoutError):
            return await self._qr_step(handle, attempt, first=False)
        if isinstance(error, errors.SessionPasswordNeededError):
            return self._ask_password(handle)
        if error is not None:
            raise LoginFailed(f"Telegram refused the QR login ({error}). Nothing was stored.")
        return await self._verified(handle, attempt)

    async def _code_answered(self, handle: str, attempt: Attempt, code: str
                             ) -> LoginStep | LinkedAccount:
        code = re.sub(r"\D", "", code)
        try:
            await attempt.tg.sign_in(attempt.phone, code, phone_code_hash=attempt.code_hash)
        except errors.SessionPasswordNeededError:
            return self._ask_password(handle)
        except (errors.PhoneCodeInvalidError, errors.PhoneCodeEmptyError) as e:
            attempt.tries += 1
            if attempt.tries >= MAX_TRIES:
                raise LoginFailed("That code was wrong again. Nothing was stored; start "
                                  'again with "link telegram".') from e
            return LoginStep(message="That code is not the one Telegram sent. Send the code "
                                     "again.", state={"attempt": handle, "step": "code"},
                             fields=[Field("code", "the login code", secret=True)])
        except errors.PhoneCodeExpiredError as e:
            raise LoginFailed("That code expired. Nothing was stored; start again with "
                              '"link telegram" for a new code.') from e
        except errors.FloodWaitError as e:
            raise LoginFailed(f"Telegram asks to wait {_wait_words(e.seconds)} before the "
                              "next try. Nothing was stored.") from e
        return await self._verified(handle, attempt)

    def _ask_password(self, handle: str) -> LoginStep:
        return LoginStep(
            message="This account has two-step verification: send its cloud password (it "
                    "is checked by Telegram and never stored).",
            state={"attempt": handle, "step": "password"},
            fields=[Field("password", "the cloud password", secret=True)])

    async def _password_answered(self, handle: str, attempt: Attempt, password: str
                                 ) -> LoginStep | LinkedAccount:
        try:
            await attempt.tg.sign_in(password=password)
        except errors.PasswordHashInvalidError as e:
            attempt.tries += 1
            if attempt.tries >= MAX_TRIES:
                raise LoginFailed("That cloud password was wrong again. Nothing was stored; "
                                  'start again with "link telegram".') from e
            return LoginStep(message="Telegram refused that cloud password. Send it again.",
                             state={"attempt": handle, "step": "password"},
                             fields=[Field("password", "the cloud password", secret=True)])
        except errors.FloodWaitError as e:
            raise LoginFailed(f"Telegram asks to wait {_wait_words(e.seconds)} before the "
                              "next try. Nothing was stored.") from e
        return await self._verified(handle, attempt)

    async def _verified(self, handle: str, attempt: Attempt) -> LinkedAccount:
        """The verification ping: who the session is, and how many chats it sees."""
        client = attempt.tg
        try:
            me = await client.get_me()
            dialogs = await client.get_dialogs(limit=0)
            credentials = {"session": save(client)}
            if attempt.api:
                credentials |= {"api_id": str(attempt.api[0]), "api_hash": attempt.api[1]}
        finally:
            self.attempts.pop(handle, None)
            await client.disconnect()
        name = " ".join(n for n in (me.first_name, me.last_name) if n) or str(me.id)
        who = f"@{me.username}" if me.username else name
        return LinkedAccount(
            external_user_id=str(me.id), display_name=name, scopes=["mtproto"],
            credentials=credentials,
            verified=[f"signed in as {who} (Telegram user {me.id}) with a new session of "
                      "its own (the bridge shows as a device in Settings > Devices)",
                      f"chats fetched: {dialogs.total} dialog(s)"])

    # ---- clean-up ----------------------------------------------------------------------------

    async def cancel(self, handle: str) -> None:
        attempt = self.attempts.pop(handle, None)
        if attempt is not None:
            if attempt.scanned is not None:
                attempt.scanned.cancel()
            if attempt.client is not None:
                await attempt.client.disconnect()

    def _prune(self) -> None:
        for handle, attempt in list(self.attempts.items()):
            if time.monotonic() - attempt.started > ATTEMPT_SECONDS:
                task = asyncio.ensure_future(self.cancel(handle))
                task.add_done_callback(lambda t: t.exception())

    async def close(self) -> None:
        for handle in list(self.attempts):
            await self.cancel(handle)
