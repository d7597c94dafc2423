"""The credential vault: envelope encryption with master keys in a key provider."""

from __future__ import annotations

import stat
from collections.abc import Mapping
from pathlib import Path

from ...config import Config, ConfigError
from ...db import Storage
from .file_provider import FileKeyProvider
from .provider import KeyProvider, VaultError
from .vault import SecretDoesNotOpen, SecretNotFound, Vault, VaultStatus

__all__ = ["KeyProvider", "SecretDoesNotOpen", "SecretNotFound", "Vault", "VaultError",
           "VaultStatus", "build_provider", "build_vault"]


def _read_pin(settings: Mapping, environ: Mapping[str, str], path: str) -> tuple[str, str]:
    """The HSM PIN, from a file or an environment variable: never from the config itself."""
    pin_file = settings.get("pin_file")
    if pin_file:
        pin_path = Path(pin_file)
        try:
            mode = pin_path.stat().st_mode
            pin = pin_path.read_text().strip()
        except OSError as e:
            raise ConfigError([f"vault.pkcs11.pin_file: cannot read {pin_file}: {e.strerror}"],
                              path) from e
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError([f"vault.pkcs11.pin_file: {pin_file} can be read by other users; "
                               "run chmod 600 on it"], path)
        return pin, f"the file {pin_file}"
    variable = settings.get("pin_env") or "RELAYFORGE_HSM_PIN"
    pin = environ.get(variable)
    if not pin:
        raise ConfigError([f"vault.pkcs11: the HSM PIN is missing; set the environment "
                           f"variable {variable} or vault.pkcs11.pin_file"], path)
    return pin, f"${variable}"


def build_provider(config: Config) -> KeyProvider:
    kind = config["vault.provider"]
    if kind == "file":
        return FileKeyProvider(config["vault.file.key_path"])
    from .pkcs11_provider import Pkcs11KeyProvider

    settings = config.get("vault.pkcs11") or {}
    pin, source = _read_pin(settings, config.environ, config.path)
    return Pkcs11KeyProvider(settings["module"], settings["token_label"], settings["key_label"],
                             pin, source)


async def build_vault(config: Config, storage: Storage) -> Vault:
    vault = Vault(build_provider(config), storage.vault_keys, storage.vault_secrets,
                  cache_seconds=config["vault.cache_seconds"])
    await vault.start()
    return vault

