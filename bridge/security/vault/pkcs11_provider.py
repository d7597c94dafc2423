"""The `pkcs11` key provider: master keys generated inside an HSM (SoftHSM2 or a real one).

Master keys are AES-256, non-extractable and sensitive: they never leave the token. Data keys
are wrapped and unwrapped by the token (RFC 5649, CKM_AES_KEY_WRAP_PAD); a rotation rewraps
inside the token, so the data keys are never in the clear outside it while that happens.
"""

from __future__ import annotations

import logging
import threading

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.exceptions import PKCS11Error

from .provider import KeyProvider, VaultError

log = logging.getLogger("relayforge.vault")

_MASTER_TEMPLATE = {
    Attribute.EXTRACTABLE: False,
    Attribute.SENSITIVE: True,
    Attribute.WRAP: True,
    Attribute.UNWRAP: True,
    Attribute.ENCRYPT: False,
    Attribute.DECRYPT: False,
}


class Pkcs11KeyProvider(KeyProvider):
    name = "pkcs11"
    hardware_backed = True

    def __init__(self, module: str, token_label: str, key_label: str, pin: str,
                 pin_source: str) -> None:
        self.module = module
        self.token_label = token_label
        self.key_label = key_label
        self._pin = pin
        self._pin_source = pin_source
        self._session: pkcs11.Session | None = None
        self._keys: dict[int, pkcs11.SecretKey] = {}
        # One PKCS#11 session is not safe to use from two threads at once.
        self._lock = threading.Lock()

    def _label(self, version: int) -> str:
        return f"{self.key_label}:v{version}"

    def open(self) -> None:
        try:
            lib = pkcs11.lib(self.module)
        except (RuntimeError, OSError) as e:
            raise VaultError(f"vault.pkcs11.module: cannot load {self.module}: {e}") from e
        try:
            token = lib.get_token(token_label=self.token_label)
        except pkcs11.exceptions.NoSuchToken as e:
            raise VaultError(f"vault.pkcs11.token_label: no token labelled "
                             f"{self.token_label!r} in {self.module}") from e
        try:
            self._session = token.open(user_pin=self._pin, rw=True)
        except pkcs11.exceptions.UserAlreadyLoggedIn:
            # PKCS#11 login is per process: another session of ours is logged in already.
            self._session = token.open(rw=True)
        except (pkcs11.exceptions.PinIncorrect, pkcs11.exceptions.PinInvalid,
                pkcs11.exceptions.PinLenRange) as e:
            raise VaultError(f"the HSM token {self.token_label!r} refused the PIN from "
                             f"{self._pin_source}: check it") from e
        except pkcs11.exceptions.PinLocked as e:
            raise VaultError(f"the HSM token {self.token_label!r} has locked its user PIN "
                             "after too many wrong tries; its security officer must unlock "
                             "it") from e
        finally:
            self._pin = ""

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    def _find(self, version: int) -> pkcs11.SecretKey | None:
        if version in self._keys:
            return self._keys[version]
        assert self._session is not None, "provider not opened"
        found = list(self._session.get_objects({
            Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.LABEL: self._label(version),
        }))
        if not found:
            return None
        if len(found) > 1:
            raise VaultError(f"the HSM holds {len(found)} keys labelled "
                             f"{self._label(version)!r}; there must be one")
        key = found[0]
        # A key that could be read or wrapped out of the token is not a master key we accept.
        if key[Attribute.EXTRACTABLE] or not key[Attribute.SENSITIVE]:
            raise VaultError(f"the HSM key {self._label(version)!r} is extractable or not "
                             "sensitive: refusing to use it as a master key")
        self._keys[version] = key
        return key

    def _key(self, version: int) -> pkcs11.SecretKey:
        key = self._find(version)
        if key is None:
            raise VaultError(f"master key {self._label(version)!r} is not in HSM token "
                             f"{self.token_label!r}")
        return key

    def has_version(self, version: int) -> bool:
        with self._lock:
            return self._find(version) is not None

    def create_version(self, version: int) -> None:
        with self._lock:
            if self._find(version) is not None:
                return
            assert self._session is not None
            self._session.generate_key(KeyType.AES, 256, label=self._label(version),
                                       store=True, template=_MASTER_TEMPLATE)
            log.info("Generated master key %s in HSM token %s", self._label(version),
                     self.token_label)

    def wrap(self, version: int, data_key: bytes) -> bytes:
        with self._lock:
            assert self._session is not None
            master = self._key(version)
            carrier = self._session.create_object({
                Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.AES,
                Attribute.VALUE: data_key, Attribute.TOKEN: False,
                Attribute.EXTRACTABLE: True, Attribute.SENSITIVE: False,
            })
            try:
                return master.wrap_key(carrier, mechanism=Mechanism.AES_KEY_WRAP_PAD)
            finally:
                carrier.destroy()

    def _unwrap_in_token(self, version: int, wrapped: bytes, sensitive: bool
                         ) -> pkcs11.SecretKey:
        try:
            return self._key(version).unwrap_key(
                ObjectClass.SECRET_KEY, KeyType.AES, wrapped,
                mechanism=Mechanism.AES_KEY_WRAP_PAD, store=False,
                template={Attribute.EXTRACTABLE: True, Attribute.SENSITIVE: sensitive},
            )
        except PKCS11Error as e:
            raise VaultError(f"a data key does not unwrap with master key "
                             f"{self._label(version)!r}: it was altered or wrapped by another "
                             "key") from e

    def unwrap(self, version: int, wrapped: bytes) -> bytes:
        with self._lock:
            key = self._unwrap_in_token(version, wrapped, sensitive=False)
            try:
                return bytes(key[Attribute.VALUE])
            finally:
                key.destroy()

    def rewrap(self, wrapped: bytes, from_version: int, to_version: int) -> bytes:
        with self._lock:
            key = self._unwrap_in_token(from_version, wrapped, sensitive=True)
            try:
                return self._key(to_version).wrap_key(key, mechanism=Mechanism.AES_KEY_WRAP_PAD)
            finally:
                key.destroy()
