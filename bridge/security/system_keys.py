"""Keys the bridge makes for itself on first start and keeps sealed in the vault."""

from __future__ import annotations

import secrets

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .vault import Vault

SYSTEM_PROFILE = "_system"
SYSTEM_PERSONA = "_bridge"


async def audit_mac_key(vault: Vault) -> bytes:
    return await vault.open_or_create(SYSTEM_PROFILE, SYSTEM_PERSONA, "audit_mac_key",
                                      lambda: secrets.token_bytes(32))


async def impersonation_signing_key(vault: Vault) -> Ed25519PrivateKey:
    raw = await vault.open_or_create(
        SYSTEM_PROFILE, SYSTEM_PERSONA, "impersonation_signing_key",
        lambda: Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
            serialization.NoEncryption()),
    )
    return Ed25519PrivateKey.from_private_bytes(raw)


async def web_keys(vault: Vault) -> tuple[bytes, bytes]:
    """Keys for the web flows: one derives PKCE verifiers and nonces, one CSRF tokens."""
    flow = await vault.open_or_create(SYSTEM_PROFILE, SYSTEM_PERSONA, "web_flow_key",
                                      lambda: secrets.token_bytes(32))
    csrf = await vault.open_or_create(SYSTEM_PROFILE, SYSTEM_PERSONA, "web_csrf_key",
                                      lambda: secrets.token_bytes(32))
    return flow, csrf


async def link_flow_key(vault: Vault) -> bytes:
    """The key OAuth linking flows derive their PKCE verifiers with (from the state)."""
    return await vault.open_or_create(SYSTEM_PROFILE, SYSTEM_PERSONA, "link_flow_key",
                                      lambda: secrets.token_bytes(32))
