"""The `file` key provider: master keys in a local file (the embedded default, not an HSM)."""

from __future__ import annotations

import base64
import json
import logging
import secrets
import stat
import subprocess
from pathlib import Path

from cryptography.hazmat.primitives.keywrap import (
    InvalidUnwrap,
    aes_key_unwrap_with_padding,
    aes_key_wrap_with_padding,
)

from ...util.files import write_private
from .provider import KeyProvider, VaultError

log = logging.getLogger("relayforge.vault")
_FORMAT = "relayforge-master-keys-v1"


class FileKeyProvider(KeyProvider):
    name = "file"
    hardware_backed = False

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self._keys: dict[int, bytes] = {}
        self._created_now = False

    def open(self) -> None:
        if not self.path.exists():
            self._write({})
            self._created_now = True
            log.info("Created a new vault master key file at %s", self.path)
        if _tracked_by_git(self.path):
            # A key in version control is a key everyone with the repository has: whatever it
            # seals (signing keys, the audit MAC key, every credential) is open to them.
            raise VaultError(
                f"vault.file.key_path: {self.path} is tracked by git, so anyone with the "
                "repository has it. Remove it from the repository (git rm --cached), move it "
                "out of the work tree and start with a new key and a new database."
            )
        mode = self.path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise VaultError(
                f"vault.file.key_path: {self.path} can be read by other users (mode "
                f"{stat.S_IMODE(mode):04o}); run chmod 600 on it"
            )
        try:
            data = json.loads(self.path.read_text())
            if data.get("format") != _FORMAT:
                raise ValueError("unknown format")
            self._keys = {int(v): base64.b64decode(k) for v, k in data["keys"].items()}
        except (ValueError, KeyError, TypeError) as e:
            raise VaultError(f"vault.file.key_path: {self.path} is not a RelayForge master key "
                             f"file ({e})") from e
        log.warning("The vault's master keys are in the file %s, not in hardware. Use the "
                    "pkcs11 provider with an HSM in production.", self.path)

    def check_new_database(self) -> None:
        if self._keys and not self._created_now:
            raise VaultError(
                f"vault.file.key_path: {self.path} holds master keys but the database has no "
                "vault: the key file is older than the database it would now seal, so it was "
                "made for another one (or came with a copy of the project). Point "
                "vault.file.key_path at the key file of this database, or move the file "
                "away to let the bridge make a new key."
            )

    def _write(self, keys: dict[int, bytes]) -> None:
        data = {"format": _FORMAT,
                "keys": {str(v): base64.b64encode(k).decode() for v, k in keys.items()}}
        write_private(self.path, json.dumps(data))

    def has_version(self, version: int) -> bool:
        return version in self._keys

    def create_version(self, version: int) -> None:
        if version in self._keys:
            return
        keys = {**self._keys, version: secrets.token_bytes(32)}
        self._write(keys)
        self._keys = keys

    def _key(self, version: int) -> bytes:
        try:
            return self._keys[version]
        except KeyError:
            raise VaultError(f"master key version {version} is not in {self.path}") from None

    def wrap(self, version: int, data_key: bytes) -> bytes:
        return aes_key_wrap_with_padding(self._key(version), data_key)

    def unwrap(self, version: int, wrapped: bytes) -> bytes:
        try:
            return aes_key_unwrap_with_padding(self._key(version), wrapped)
        except InvalidUnwrap as e:
            raise VaultError(f"a data key does not unwrap with master key version {version}: "
                             "the key file or the database was changed") from e


def _tracked_by_git(path: Path) -> bool:
    """Whether `path` is tracked in a git work tree (False when git or a repository is absent)."""
    directory = path.resolve().parent
    if not any((parent / ".git").exists() for parent in (directory, *directory.parents)):
        return False
    try:
        result = subprocess.run(
            ["git", "-C", str(directory), "ls-files", "--error-unmatch", "--", path.name],
            capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0
