"""Multi-factor authentication with TOTP (RFC 6238): enrolment, checks and their limits.

The secret is sealed in the vault (vault profile: the account; persona `_mfa`), never stored
in the database in plaintext and never logged. A code is accepted once: the time-step it
belongs to is recorded, and a code of that step or an earlier one is refused afterwards. Wrong
codes are counted in the database, so a restart does not reset the limit, and they count
towards the anomaly threshold too.
"""

from __future__ import annotations

import hmac
import io
import math
import time
from datetime import UTC, datetime
from typing import Any

import attrs
import pyotp

from ..audit import AuditEvent, AuditLog
from ..db import Storage
from ..db.mfa_factor import MfaFactor
from ..db.persona import Persona, PersonaStatus
from .anomaly import Anomalies
from .vault import SecretNotFound, Vault

MFA_PERSONA = "_mfa"
SECRET_FIELD = "totp_secret"
PENDING_FIELD = "totp_pending"
FAILURE_KIND = "mfa"
SETUP_HINT = "set up MFA with `mfa setup`"
VERIFY_HINT = "verify with `mfa verify CODE` first"


class MfaRefused(Exception):
    """The check did not pass; the message tells the person what to do."""


@attrs.frozen
class MfaSettings:
    fresh_seconds: int = 300
    max_failures: int = 5
    failure_window_seconds: int = 900
    issuer: str = "RelayForge"

    @classmethod
    def from_config(cls, get: Any) -> MfaSettings:
        return cls(get("fresh_seconds"), get("max_failures"), get("failure_window_seconds"),
                   get("issuer"))


@attrs.frozen
class Enrolment:
    # Both carry the secret: shown to the person once, in their management room only.
    uri: str = attrs.field(repr=False)
    qr_png: bytes = attrs.field(repr=False)
    qr_size: int


def qr_png(uri: str) -> tuple[bytes, int]:
    """A PNG of the QR code for an authenticator app, and its width in pixels."""
    # Imported at the first enrolment: qrcode brings Pillow along (about 4 MiB at idle).
    import qrcode
    from qrcode.image.pure import PyPNGImage

    image = qrcode.make(uri, image_factory=PyPNGImage, box_size=6, border=4)
    out = io.BytesIO()
    image.save(out)
    return out.getvalue(), image.pixel_size


def _now_ms() -> int:
    return int(time.time() * 1000)


def matching_step(secret: str, code: str, now: float) -> int | None:
    """The time-step whose code this is: now, or one step either side for clock drift."""
    totp = pyotp.TOTP(secret)
    current = int(now // totp.interval)
    for step in (current - 1, current, current + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None


class Mfa:
    def __init__(self, storage: Storage, vault: Vault, audit: AuditLog, anomalies: Anomalies,
                 settings: MfaSettings) -> None:
        self.storage = storage
        self.vault = vault
        self.audit = audit
        self.anomalies = anomalies
        self.settings = settings

    # ---- state -----------------------------------------------------------------------------

    async def _factor(self, account_id: str) -> MfaFactor | None:
        return await self.storage.mfa.get(account_id)

    async def enrolled(self, account_id: str) -> bool:
        factor = await self._factor(account_id)
        return factor is not None and factor.enrolled_at is not None

    def _fresh(self, factor: MfaFactor | None) -> bool:
        return (factor is not None and factor.enrolled_at is not None
                and factor.verified_at is not None
                and _now_ms() - factor.verified_at < self.settings.fresh_seconds * 1000)

    async def fresh(self, account_id: str) -> bool:
        return self._fresh(await self._factor(account_id))

    async def missing_check(self, account_id: str) -> str | None:
        """None after a fresh check; otherwise what the person must do first."""
        factor = await self._factor(account_id)
        if self._fresh(factor):
            return None
        return SETUP_HINT if factor is None or factor.enrolled_at is None else VERIFY_HINT

    # ---- enrolment -------------------------------------------------------------------------

    async def setup(self, account_id: str, label: str) -> Enrolment:
        """Make a new secret waiting for its first code. Replacing an enrolled secret needs a
        fresh check with the old one, so whoever holds a Matrix session alone cannot."""
        factor = await self._factor(account_id)
        if factor is not None and factor.enrolled_at is not None and not self._fresh(factor):
            raise MfaRefused(
                "You already have MFA set up. To replace it, verify with `mfa verify CODE` "
                "(from your current app) first, then send `mfa setup` again within "
                f"{self._fresh_minutes} minutes.")
        secret = pyotp.random_base32(32)  # 160 bits, as RFC 4226 recommends
        await self.vault.seal(account_id, MFA_PERSONA, PENDING_FIELD, secret)
        await self.storage.mfa.start_enrolment(account_id, _now_ms())
        uri = pyotp.TOTP(secret).provisioning_uri(name=label, issuer_name=self.settings.issuer)
        png, size = qr_png(uri)
        return Enrolment(uri, png, size)

    @property
    def _fresh_minutes(self) -> int:
        return max(1, round(self.settings.fresh_seconds / 60))

    # ---- checks ----------------------------------------------------------------------------

    async def verify(self, account_id: str, code: str, actor: str) -> tuple[bool, str]:
        """Check a code: it confirms a pending enrolment or records a fresh check. Returns
        whether it confirmed an enrolment, and what to tell the person; raises MfaRefused
        when it does not pass."""
        factor = await self._factor(account_id)
        candidates = await self._secrets(account_id)
        if factor is None or not candidates:
            raise MfaRefused(f"You have no MFA yet: {SETUP_HINT}.")
        await self._check_limit(account_id)
        code = "".join(code.split())
        if not (code.isdigit() and len(code) == 6):
            raise MfaRefused("A code is the 6 digits your authenticator app shows: "
                             "mfa verify 123456")
        now = time.time()
        for field, secret in candidates:
            step = matching_step(secret, code, now)
            if step is None:
                continue
            enrol = field == PENDING_FIELD
            if not await self.storage.mfa.use_step(account_id, step, int(now * 1000),
                                                   enrol=enrol):
                await self._failed(account_id, actor, "replayed")
                raise MfaRefused("That code was used already: wait for the next one (codes "
                                 "change every 30 seconds).")
            if enrol:
                await self.vault.seal(account_id, MFA_PERSONA, SECRET_FIELD, secret)
                await self.vault.destroy(account_id, MFA_PERSONA, PENDING_FIELD)
                await self.audit.append(AuditEvent.MFA_ENROLLED, actor=actor,
                                        account=account_id)
                return True, ("MFA is set up. This check counts as fresh for the next "
                        f"{self._fresh_minutes} minutes; later, `mfa verify CODE` again "
                        "before linking a high-risk account.")
            await self.audit.append(AuditEvent.MFA_VERIFIED, actor=actor, account=account_id)
            return False, (f"Verified. For the next {self._fresh_minutes} minutes you can link "
                    "high-risk accounts and resume accounts that need re-authentication.")
        left = await self._failed(account_id, actor, "wrong")
        raise MfaRefused("That code is wrong." + (
            f" {left} more wrong code(s) and MFA is locked for a while." if left > 0
            else " " + await self._limit_message(account_id)))

    async def _secrets(self, account_id: str) -> list[tuple[str, str]]:
        """The pending secret first (a code from the new app confirms it), then the
        enrolled one."""
        found = []
        for field in (PENDING_FIELD, SECRET_FIELD):
            try:
                found.append((field, await self.vault.open_text(account_id, MFA_PERSONA,
                                                                field)))
            except SecretNotFound:
                continue
        return found

    async def _failures(self, account_id: str) -> list[int]:
        since = _now_ms() - self.settings.failure_window_seconds * 1000
        return await self.storage.failures.of_kind(account_id, FAILURE_KIND, since)

    async def _failed(self, account_id: str, actor: str, reason: str) -> int:
        """Record a failed check; returns how many more are allowed in the window."""
        await self.audit.append(AuditEvent.MFA_FAILED, actor=actor, account=account_id,
                                details={"reason": reason})
        await self.anomalies.failure(FAILURE_KIND, account_id)
        return self.settings.max_failures - len(await self._failures(account_id))

    async def _limit_message(self, account_id: str) -> str:
        failures = await self._failures(account_id)
        # The limit lifts when the oldest of the last `max_failures` leaves the window.
        lifts = failures[-self.settings.max_failures] + (
            self.settings.failure_window_seconds * 1000)
        minutes = max(1, math.ceil((lifts - _now_ms()) / 60_000))
        at = datetime.fromtimestamp(lifts / 1000, UTC).strftime("%H:%M UTC")
        return (f"Too many wrong codes: try again after {at} (in {minutes} minute"
                f"{'s' if minutes != 1 else ''}).")

    async def locked(self, account_id: str) -> bool:
        """Too many wrong codes lately: no code is even checked until the window passes."""
        return len(await self._failures(account_id)) >= self.settings.max_failures

    async def _check_limit(self, account_id: str) -> None:
        if await self.locked(account_id):
            raise MfaRefused(await self._limit_message(account_id))

    # ---- what needs a fresh check ----------------------------------------------------------

    async def check_resume(self, account_id: str, persona: Persona) -> str | None:
        """Resuming an account stopped for re-authentication needs a fresh MFA check: why
        not yet, or None."""
        if persona.status != PersonaStatus.NEEDS_REAUTH:
            return None
        missing = await self.missing_check(account_id)
        if missing is None:
            return None
        ref = f"{persona.platform}:{persona.external_user_id}"
        if missing == SETUP_HINT:
            return (f"{ref} needs re-authentication. Prove the account again with relink "
                    f"{ref}, or {SETUP_HINT} and `mfa verify CODE`, then resume {ref}.")
        return (f"{ref} needs re-authentication: {VERIFY_HINT}, then resume {ref} "
                f"(or relink {ref}).")
