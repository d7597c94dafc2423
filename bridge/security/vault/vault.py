"""Envelope encryption of every credential the bridge holds.

Each profile has its own AES-256 data key. Data keys are stored only wrapped by a master key
that lives in a key provider (an HSM, or a file). Every secret is AES-256-GCM encrypted with
associated data naming its profile, persona, field and data-key version, so a ciphertext
copied to another row or field does not open.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections import defaultdict
from collections.abc import Callable

import attrs
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ...db.lease import LeaseStore
from ...db.vault_key import DataKeyRow, MasterState, VaultKeyStore
from ...db.vault_secret import SecretRow, VaultSecretStore
from .provider import KeyProvider, VaultError

log = logging.getLogger("relayforge.vault")

DATA_KEY_VERSION = 1
_AAD_LABEL = "relayforge-vault-v1"
START_LOCK = "relayforge:vault-start"  # the advisory lock workers start their vaults under


class SecretNotFound(VaultError):
    pass


class SecretDoesNotOpen(VaultError):
    pass


def secret_aad(profile: str, persona: str, field: str, key_version: int) -> bytes:
    """What a ciphertext is bound to. JSON keeps the parts unambiguous ("a","bc" != "ab","c")."""
    return json.dumps([_AAD_LABEL, profile, persona, field, key_version],
                      separators=(",", ":")).encode()


@attrs.define
class _CachedKey:
    key: bytes
    version: int
    expires: float


@attrs.frozen
class RotationReport:
    target_version: int
    rewrapped: int
    resumed: bool
    retired: list[int]


@attrs.frozen
class VaultStatus:
    provider: str
    hardware_backed: bool
    versions: dict[int, MasterState]
    data_keys_by_version: dict[int, int]
    secrets: int

    @property
    def rotation_pending(self) -> bool:
        current = max(self.versions, default=None)
        return any(v != current and n for v, n in self.data_keys_by_version.items())


class Vault:
    def __init__(self, provider: KeyProvider, keys: VaultKeyStore, secrets: VaultSecretStore,
                 cache_seconds: float = 60.0) -> None:
        self.provider = provider
        self.keys = keys
        self.secrets = secrets
        self.cache_seconds = cache_seconds
        self._cache: dict[str, _CachedKey] = {}
        self._profile_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def start(self) -> None:
        """Open the provider; make master key version 1 on first use; check every version
        still in use is present."""
        # One worker at a time (a PostgreSQL advisory lock; SQLite has one process): workers
        # started together on a new database would each make a master key, overwriting each
        # other's key file or both adding version 1. The first makes it; the others open
        # the provider after it, find version 1 in the database and use the same key.
        async with LeaseStore(self.keys.db).exclusive(START_LOCK):
            self.provider.open()
            versions = await self.keys.master_versions()
            if not versions:
                self.provider.check_new_database()
                self.provider.create_version(1)
                await self.keys.add_master(1, self.provider.name)
                versions = {1: MasterState.CURRENT}
        for version, state in versions.items():
            if state != MasterState.RETIRED and not self.provider.has_version(version):
                raise VaultError(f"master key version {version} is in use but the "
                                 f"{self.provider.name} key provider does not have it")

    def stop(self) -> None:
        self._cache.clear()
        self.provider.close()

    # ---- data keys -------------------------------------------------------------------------

    async def _data_key(self, profile: str, create: bool) -> tuple[bytes, int] | None:
        cached = self._cache.get(profile)
        if cached and cached.expires > time.monotonic():
            return cached.key, cached.version
        async with self._profile_locks[profile]:
            row = await self.keys.data_key(profile)
            if row is None:
                if not create:
                    return None
                row = await self._create_data_key(profile)
            key = self.provider.unwrap(row.master_version, row.wrapped)
        self._cache[profile] = _CachedKey(key, row.version,
                                          time.monotonic() + self.cache_seconds)
        return key, row.version

    async def _create_data_key(self, profile: str) -> DataKeyRow:
        master = await self.keys.current_master()
        if master is None:
            raise VaultError("the vault has not been started")
        row = DataKeyRow(profile, DATA_KEY_VERSION, master,
                         self.provider.wrap(master, AESGCM.generate_key(256)))
        if not await self.keys.add_data_key(row):
            # Another process made it first; use theirs.
            existing = await self.keys.data_key(profile)
            assert existing is not None
            return existing
        return row

    def forget_cached_key(self, profile: str) -> None:
        self._cache.pop(profile, None)

    # ---- secrets ---------------------------------------------------------------------------

    async def _encrypt(self, profile: str, persona: str, field: str,
                       plaintext: str | bytes) -> SecretRow:
        data = plaintext.encode() if isinstance(plaintext, str) else plaintext
        found = await self._data_key(profile, create=True)
        assert found is not None
        key, version = found
        nonce = os.urandom(12)
        ciphertext = AESGCM(key).encrypt(nonce, data,
                                         secret_aad(profile, persona, field, version))
        return SecretRow(profile, persona, field, version, nonce, ciphertext)

    async def seal(self, profile: str, persona: str, field: str, plaintext: str | bytes) -> None:
        """Store a secret, replacing what the field held before."""
        await self.secrets.put(await self._encrypt(profile, persona, field, plaintext))

    async def open_or_create(self, profile: str, persona: str, field: str,
                             make: Callable[[], bytes]) -> bytes:
        """Open a secret the bridge makes for itself (signing keys), making it on first use.
        If two processes start at once, both end up with the one that was stored first."""
        try:
            return await self.open(profile, persona, field)
        except SecretNotFound:
            pass
        await self.secrets.put_new(await self._encrypt(profile, persona, field, make()))
        return await self.open(profile, persona, field)

    async def open(self, profile: str, persona: str, field: str) -> bytes:
        row = await self.secrets.get(profile, persona, field)
        if row is None:
            raise SecretNotFound(f"no {field} is stored for persona {persona} of profile "
                                 f"{profile}")
        found = await self._data_key(profile, create=False)
        if found is None:
            raise SecretDoesNotOpen(f"profile {profile} has no data key")
        key, _ = found
        try:
            return AESGCM(key).decrypt(row.nonce, row.ciphertext,
                                       secret_aad(profile, persona, field, row.key_version))
        except InvalidTag:
            raise SecretDoesNotOpen(
                f"the stored {field} of persona {persona} (profile {profile}) does not open: it "
                "was sealed for another persona or field, or it was altered"
            ) from None

    async def open_text(self, profile: str, persona: str, field: str) -> str:
        return (await self.open(profile, persona, field)).decode()

    async def destroy(self, profile: str, persona: str, field: str | None = None) -> int:
        """Delete one field of a persona, or all of them; returns how many were deleted."""
        return await self.secrets.delete(profile, persona, field)

    async def fields(self, profile: str, persona: str) -> list[str]:
        """The names of what is sealed for a persona (nothing is opened)."""
        return await self.secrets.fields(profile, persona)

    async def destroy_older(self, persona_pattern: str, before_ms: int) -> int:
        """Delete what personas matching the SQL LIKE pattern had sealed before `before_ms`."""
        return await self.secrets.delete_older(persona_pattern, before_ms)

    async def revoke_persona(self, profile: str, persona: str) -> int:
        """Destroy everything held for a persona and drop the profile's opened key."""
        self.forget_cached_key(profile)
        return await self.destroy(profile, persona)

    async def destroy_data_key(self, profile: str) -> bool:
        """Crypto-shred a profile: its data key and every secret sealed under it are deleted,
        so any copy of its ciphertexts (a backup, a dump) can never be opened again."""
        self.forget_cached_key(profile)
        destroyed = await self.keys.delete_data_key(profile)
        self.forget_cached_key(profile)
        return destroyed

    # ---- rotation --------------------------------------------------------------------------

    async def rotate(self, on_progress: Callable[[int], None] | None = None) -> RotationReport:
        """Rewrap every data key under a new master key version.

        Secrets are never decrypted: only data keys are rewrapped (inside the HSM with the
        pkcs11 provider). Each data key is updated on its own, so a crash part way leaves some
        keys on the old version and some on the new one, both usable; running `rotate` again
        finishes that rotation instead of starting another.
        """
        versions = await self.keys.master_versions()
        current = max(versions)
        resumed = bool(await self.keys.data_keys_not_on(current, limit=1))
        if not resumed:
            current += 1
            # Provider first: if we crash between the two, the next run finds the key there.
            self.provider.create_version(current)
            await self.keys.add_master(current, self.provider.name)
        done = 0
        while batch := await self.keys.data_keys_not_on(current):
            for row in batch:
                wrapped = self.provider.rewrap(row.wrapped, row.master_version, current)
                if await self.keys.rewrapped(row, current, wrapped):
                    done += 1
                    if on_progress:
                        on_progress(done)
        retired = await self.keys.retire_unused()
        # Cached data keys are still right (only their wrapping changed); nothing to drop.
        return RotationReport(current, done, resumed, retired)

    async def status(self) -> VaultStatus:
        return VaultStatus(
            provider=self.provider.name,
            hardware_backed=self.provider.hardware_backed,
            versions=await self.keys.master_versions(),
            data_keys_by_version=await self.keys.count_by_master(),
            secrets=await self.secrets.count(),
        )
