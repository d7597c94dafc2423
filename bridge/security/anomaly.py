"""Anomaly detection: repeated failures, and a session used from another network.

Failures are counted in the database (`security_failure`), per account (wrong MFA codes,
refused provisioning requests) and per persona (the network refusing its credentials). When
the failures in `security.anomaly.window_seconds` reach `security.anomaly.max_failures`, the
persona (or every active persona of the account) moves to needs_reauth: nothing more is sent
as it, its session closes, and the person is told in their management room why and how to go
on (relink the account, or `mfa verify` and `resume`).

A web or provisioning session remembers the client network it was first used from (the
address cut to `ipv4_prefix`/`ipv6_prefix` bits, and the country when a GeoIP database is
configured). A request from another network ends that session: 401, and the person signs in
again.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
from aiohttp import web

from ..audit import AuditEvent, AuditLog
from ..db import Storage
from ..db.persona import Persona, PersonaStatus

log = logging.getLogger("relayforge.anomaly")

# What each kind of failure is, in words for the person.
KIND_WORDS = {"mfa": "wrong MFA codes", "refused_request": "requests from another network",
              "remote_auth": "credentials refused by the network"}
NETWORK_CHANGED = "RF_SESSION_NETWORK_CHANGED"
NETWORK_CHANGED_MESSAGE = ("This session was used from another network, so it was ended to "
                           "protect your account. Sign in again (or get a new token).")
# Personas an anomaly stops: read-only ones too (they still receive).
_RUNNING = (PersonaStatus.ACTIVE, PersonaStatus.READ_ONLY)

Notify = Callable[[Any, str], Awaitable[bool]]


def _now() -> int:
    return int(time.time() * 1000)


@attrs.frozen
class AnomalySettings:
    max_failures: int = 10
    window_seconds: int = 3600
    ipv4_prefix: int = 24
    ipv6_prefix: int = 48
    geoip_database: str | None = None
    trusted_proxies: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, get: Callable[[str], Any]) -> AnomalySettings:
        return cls(get("max_failures"), get("window_seconds"), get("ipv4_prefix"),
                   get("ipv6_prefix"), get("geoip_database"),
                   tuple(get("trusted_proxies") or ()))


def persona_ref(persona: Persona) -> str:
    return f"{persona.platform}:{persona.external_user_id}"


class Anomalies:
    def __init__(self, storage: Storage, audit: AuditLog, settings: AnomalySettings) -> None:
        self.storage = storage
        self.audit = audit
        self.settings = settings
        # Set once the Matrix side is up: tell a person something in their management room.
        self.notify: Notify | None = None
        # Called with each persona an anomaly stopped (its session must close).
        self.on_stopped: list[Callable[[Persona], Awaitable[None]]] = []

    async def failure(self, kind: str, account_id: str, persona_id: str | None = None) -> None:
        """Count one failure; act when the window's count reaches the threshold."""
        now = _now()
        await self.storage.failures.add(account_id, persona_id, kind, now)
        since = now - self.settings.window_seconds * 1000
        if await self.storage.failures.pending(account_id, persona_id,
                                               since) < self.settings.max_failures:
            return
        kinds = await self.storage.failures.clear(account_id, persona_id, since, now)
        if len(kinds) >= self.settings.max_failures:  # else a racing caller acted already
            await self._stop(account_id, persona_id, kinds)

    async def remote_auth_failure(self, persona_id: str, reason: str) -> None:
        """A connector reports that its network refused a persona's credentials."""
        persona = await self.storage.personas.get(persona_id)
        if persona is None:
            return
        account_id = await self._account_of(persona)
        log.info("%s refused the credentials of persona %s: %s", persona.platform,
                 persona_id, reason)
        await self.failure("remote_auth", account_id, persona_id)

    async def _account_of(self, persona: Persona) -> str:
        # A persona's profile always belongs to an account (foreign keys).
        return await self.storage.profiles.account_of(persona.profile_id) or ""

    async def _running_personas(self, account_id: str, persona_id: str | None
                                ) -> list[Persona]:
        if persona_id is not None:
            persona = await self.storage.personas.get(persona_id)
            return [persona] if persona is not None and persona.status in _RUNNING else []
        personas = []
        for profile in await self.storage.profiles.for_account(account_id):
            personas += [p for p in await self.storage.personas.for_profile(profile.id)
                         if p.status in _RUNNING]
        return personas

    async def _stop(self, account_id: str, persona_id: str | None, kinds: list[str]) -> None:
        # Whoever caused this may have passed an MFA check before: it must be passed again.
        await self.storage.mfa.expire_check(account_id)
        stopped = await self._running_personas(account_id, persona_id)
        for persona in stopped:
            await self.storage.personas.set_status(persona.id, PersonaStatus.NEEDS_REAUTH)
            persona.status = PersonaStatus.NEEDS_REAUTH
            for hook in self.on_stopped:
                await hook(persona)
        words = ", ".join(KIND_WORDS.get(k, k) for k in sorted(set(kinds)))
        await self.audit.append(AuditEvent.ANOMALY, account=account_id, persona=persona_id,
                                details={"failures": len(kinds), "what": words,
                                         "window_minutes": self._minutes,
                                         "stopped": ", ".join(persona_ref(p)
                                                              for p in stopped) or None})
        log.warning("Anomaly on account %s (%s): %d failures; stopped %d persona(s)",
                    account_id, words, len(kinds), len(stopped))
        if persona_id is not None and not stopped:
            return  # already paused or stopped: nothing changed for the person
        await self._tell(account_id, self._message(len(kinds), words, persona_id, stopped))

    @property
    def _minutes(self) -> int:
        return max(1, round(self.settings.window_seconds / 60))

    def _message(self, count: int, words: str, persona_id: str | None,
                 stopped: list[Persona]) -> str:
        window = f"in the last {self._minutes} minutes"
        if persona_id is not None and stopped:
            persona = stopped[0]
            ref = persona_ref(persona)
            return (f"Security: {persona.platform} refused the credentials of {ref} {count} "
                    f"times {window}, so RelayForge stopped using that account: it now needs "
                    "re-authentication, and nothing is sent or received for it until then. "
                    f"Link it again with its current credentials: relink {ref}. If the "
                    f"credentials are right: mfa verify CODE, then resume {ref}.")
        head = (f"Security: {count} failed checks on your account {window} ({words}). ")
        if not stopped:
            return (head + "Nothing of yours is linked, so nothing was stopped. If this was "
                    "not you, change your Matrix password and read \"audit\".")
        refs = ", ".join(persona_ref(p) for p in stopped)
        first = persona_ref(stopped[0])
        return (head + f"To protect you, RelayForge stopped acting as you: {refs} now need(s) "
                "re-authentication, and nothing is sent or received for them until then. If "
                f"this was you: mfa verify CODE, then resume {first} (or prove the account "
                f"again with relink {first}). If it was not you, change your Matrix password "
                "and read \"audit\".")

    async def _tell(self, account_id: str, text: str) -> None:
        if self.notify is None:
            log.warning("Could not tell account %s: %s", account_id, text)
            return
        for mxid in await self.storage.accounts.matrix_users(account_id):
            await self.notify(mxid, text)


class SessionNetworks:
    """Ends a web or provisioning session used from a network it did not start from."""

    def __init__(self, storage: Storage, audit: AuditLog, anomalies: Anomalies,
                 settings: AnomalySettings) -> None:
        self.storage = storage
        self.audit = audit
        self.anomalies = anomalies
        self.settings = settings
        self._proxies = [ipaddress.ip_network(p, strict=False)
                         for p in settings.trusted_proxies]
        self._geoip = _open_geoip(settings.geoip_database) if settings.geoip_database else None

    def close(self) -> None:
        if self._geoip is not None:
            self._geoip.close()

    def client_address(self, request: web.Request) -> str | None:
        """The client's address; behind a trusted proxy, the last untrusted hop it forwarded
        (hops added by the client itself come first, so they cannot be used to hide)."""
        address = request.remote
        if address and self._proxies and self._trusted(address):
            hops = [h.strip() for h in request.headers.get("X-Forwarded-For", "").split(",")]
            for hop in reversed([h for h in hops if h]):
                address = hop
                if not self._trusted(hop):
                    break
        return address

    def _trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in proxy for proxy in self._proxies)

    def network_of(self, address: str) -> str:
        ip = ipaddress.ip_address(address)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        bits = self.settings.ipv4_prefix if ip.version == 4 else self.settings.ipv6_prefix
        return str(ipaddress.ip_network(f"{ip}/{bits}", strict=False))

    def country_of(self, address: str) -> str | None:
        if self._geoip is None:
            return None
        from geoip2.errors import AddressNotFoundError

        try:
            return self._geoip.country(address).country.iso_code
        except (AddressNotFoundError, ValueError):
            return None

    async def check(self, request: web.Request, kind: str, credential: str, account_id: str,
                    ttl_seconds: int) -> str | None:
        """None if this session may go on from here; otherwise why it was ended. The first
        request with a credential records where it comes from."""
        address = self.client_address(request)
        if address is None:
            return None  # a Unix socket: there is no network to compare
        try:
            network = self.network_of(address)
        except ValueError:
            log.warning("Not an IP address from the client or proxy: %r", address)
            return NETWORK_CHANGED_MESSAGE
        country = self.country_of(address)
        key = hashlib.sha256(f"{kind}\0{credential}".encode()).hexdigest()
        now = _now()
        seen = await self.storage.session_networks.get(key, now)
        if seen is None:
            await self.storage.session_networks.bind(key, account_id, network, country, now,
                                                     now + ttl_seconds * 1000)
            return None
        if seen.refused_at is not None:
            return NETWORK_CHANGED_MESSAGE
        if seen.network == network and not (seen.country and country
                                            and seen.country != country):
            return None
        await self.storage.session_networks.refuse(key, now)
        if kind == "web_session":
            await self.storage.one_time.revoke("web_session", credential)
        await self.audit.append(AuditEvent.SESSION_NETWORK_CHANGED, account=account_id,
                                details={"via": kind, "first_network": seen.network,
                                         "new_network": network, "first_country": seen.country,
                                         "new_country": country})
        await self.anomalies.failure("refused_request", account_id)
        return NETWORK_CHANGED_MESSAGE


def _open_geoip(path: str) -> Any:
    import geoip2.database

    return geoip2.database.Reader(path)


def geoip_problem(path: Any) -> str | None:
    """Why `security.anomaly.geoip_database` cannot be used, or None."""
    import importlib.util
    import os

    if path is None:
        return None
    if not isinstance(path, str) or not os.path.isfile(path):
        return (f"security.anomaly.geoip_database: got {path!r}; expected the path of a "
                "MaxMind country or city database (.mmdb), or null")
    if importlib.util.find_spec("geoip2") is None:
        return ("security.anomaly.geoip_database: the geoip2 package is not installed; install "
                "RelayForge with the geoip extra (pip install 'relayforge[geoip]')")
    return None
