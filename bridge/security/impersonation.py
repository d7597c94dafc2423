"""Impersonation tokens: the only way a connector may act as a person.

Before a connector sends, edits, deletes or reacts as someone, the core mints a compact JWS
(Ed25519) naming the persona, profile, account, the one action and the one target it allows,
valid for at most 60 seconds and usable once. The connector's send path verifies it and
refuses otherwise; every impersonated send leaves an audit record with the token's `jti`.
"""

from __future__ import annotations

import json
import secrets
import time
from enum import StrEnum
from functools import cached_property
from typing import TYPE_CHECKING

import attrs
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

if TYPE_CHECKING:
    from joserfc.jwk import OKPKey

from ..audit import AuditEvent, AuditLog
from ..db.impersonation_jti import JtiStore

ALGORITHM = "Ed25519"  # RFC 9864's fully-specified name for EdDSA over Ed25519
TOKEN_TYPE = "relayforge-impersonation+jwt"
MAX_LIFETIME = 60


class Action(StrEnum):
    SEND = "send"
    EDIT = "edit"
    DELETE = "delete"
    REACT = "react"
    # Presence-like signals sent as the person: typing and "I have read this".
    TYPING = "typing"
    READ = "read"


class ImpersonationRefused(Exception):
    """The token does not allow this; nothing may be sent. This is the bridge refusing its
    own token, never the network refusing the person: the persona's credentials are fine.
    `retryable`: the token was right but spent (expired on the way, already used), so the
    same action with a freshly minted token may go ahead."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


@attrs.frozen
class Target:
    network: str
    channel: str


@attrs.frozen
class Claims:
    persona: str
    profile: str
    account: str
    action: Action
    target: Target
    issued_at: int
    expires_at: int
    jti: str
    # The person's agent (MCP) this act was asked for by, by name; None for the person.
    agent: str | None = None


def _okp(private: Ed25519PrivateKey | Ed25519PublicKey) -> OKPKey:
    # joserfc (about 3 MiB) is imported with the first token, not at start-up.
    from joserfc.jwk import OKPKey

    return OKPKey.import_key(private)


class TokenMinter:
    """Held by the core: mints tokens with the bridge's signing key."""

    def __init__(self, signing_key: Ed25519PrivateKey, lifetime: int = 30) -> None:
        if not 0 < lifetime <= MAX_LIFETIME:
            raise ValueError(f"impersonation tokens live 1-{MAX_LIFETIME} s, not {lifetime}")
        self._signing_key = signing_key
        self.public_key = signing_key.public_key()
        self.lifetime = lifetime

    @cached_property
    def _key(self) -> OKPKey:
        return _okp(self._signing_key)

    def mint(self, *, persona: str, profile: str, account: str, action: Action,
             target: Target, now: float | None = None, agent: str | None = None) -> str:
        issued = int(now if now is not None else time.time())
        claims = {
            "persona": persona, "profile": profile, "account": account,
            "action": Action(action).value,
            "target": {"network": target.network, "channel": target.channel},
            "iat": issued, "exp": issued + self.lifetime, "jti": secrets.token_urlsafe(18),
        }
        if agent is not None:
            claims["agent"] = agent
        payload = json.dumps(claims, separators=(",", ":")).encode()
        from joserfc import jws

        return jws.serialize_compact({"alg": ALGORITHM, "typ": TOKEN_TYPE}, payload, self._key,
                                     algorithms=[ALGORITHM])


class TokenVerifier:
    """Held by a connector's send path: checks a token allows exactly this, once."""

    def __init__(self, public_key: Ed25519PublicKey, jtis: JtiStore, audit: AuditLog) -> None:
        self._public_key = public_key
        self.jtis = jtis
        self.audit = audit

    @cached_property
    def _key(self) -> OKPKey:
        return _okp(self._public_key)

    async def verify(self, token: str, *, action: Action, target: Target,
                     now: float | None = None) -> Claims:
        claims = self._decode(token)
        moment = now if now is not None else time.time()
        if claims.expires_at <= moment:
            raise ImpersonationRefused(f"token {claims.jti} expired", retryable=True)
        if claims.expires_at - claims.issued_at > MAX_LIFETIME:
            raise ImpersonationRefused(f"token {claims.jti} lives longer than {MAX_LIFETIME} s")
        if claims.action != action:
            raise ImpersonationRefused(
                f"token {claims.jti} allows {claims.action.value}, not {Action(action).value}")
        if claims.target != target:
            raise ImpersonationRefused(
                f"token {claims.jti} is for {claims.target.network} {claims.target.channel}, "
                f"not {target.network} {target.channel}")
        # Last, so a token refused for another reason is not used up.
        if not await self.jtis.use(claims.jti, claims.expires_at * 1000):
            raise ImpersonationRefused(f"token {claims.jti} was already used",
                                       retryable=True)
        return claims

    def _decode(self, token: str) -> Claims:
        from joserfc import jws
        from joserfc.errors import JoseError

        try:
            obj = jws.deserialize_compact(token, self._key, algorithms=[ALGORITHM])
        except (JoseError, ValueError) as e:
            raise ImpersonationRefused(f"token signature or format is invalid ({e})") from e
        if obj.headers().get("typ") != TOKEN_TYPE:
            raise ImpersonationRefused("not an impersonation token")
        try:
            raw = json.loads(obj.payload)
            return Claims(
                persona=str(raw["persona"]), profile=str(raw["profile"]),
                account=str(raw["account"]), action=Action(raw["action"]),
                target=Target(str(raw["target"]["network"]), str(raw["target"]["channel"])),
                issued_at=int(raw["iat"]), expires_at=int(raw["exp"]), jti=str(raw["jti"]),
                agent=str(raw["agent"]) if raw.get("agent") is not None else None,
            )
        except (ValueError, KeyError, TypeError) as e:
            raise ImpersonationRefused(f"token claims are malformed ({e})") from e

    async def record_send(self, claims: Claims, remote_id: str | None) -> None:
        """The audit record every impersonated send leaves, referencing the token."""
        await self.audit.append(
            AuditEvent.IMPERSONATED_SEND, actor=claims.account, account=claims.account,
            profile=claims.profile, persona=claims.persona,
            details={"jti": claims.jti, "action": claims.action.value,
                     "network": claims.target.network, "channel": claims.target.channel,
                     "remote_id": remote_id,
                     # Every act of an agent names it beside the person it acted for.
                     **({"agent": claims.agent} if claims.agent else {})},
        )
