"""Key providers: where the master keys live. The vault never sees a master key itself."""

from __future__ import annotations

from abc import ABC, abstractmethod


class VaultError(Exception):
    """The vault cannot do what was asked; the message says why and what to check."""


class KeyProvider(ABC):
    #: The `vault.provider` config value.
    name: str
    #: False for keys kept in a file: the bridge says so once at start-up.
    hardware_backed: bool

    @abstractmethod
    def open(self) -> None:
        """Connect (log in to the token, read the key file). Raises VaultError."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Disconnect."""

    def check_new_database(self) -> None:  # noqa: B027 - optional hook
        """Called when the database has no vault yet, before master key version 1 is made.
        Providers whose keys could have come from somewhere else (a file shipped with a copy
        of the project) raise VaultError here instead of adopting them."""

    @abstractmethod
    def has_version(self, version: int) -> bool: ...

    @abstractmethod
    def create_version(self, version: int) -> None:
        """Generate master key `version` (keeping an existing one: rotation may be resumed)."""

    @abstractmethod
    def wrap(self, version: int, data_key: bytes) -> bytes:
        """Wrap a data key with master key `version` (RFC 5649 AES key wrap with padding)."""

    @abstractmethod
    def unwrap(self, version: int, wrapped: bytes) -> bytes: ...

    def rewrap(self, wrapped: bytes, from_version: int, to_version: int) -> bytes:
        """Re-wrap a data key under another master key. Hardware providers override this so
        the data key never leaves the token in the clear."""
        return self.wrap(to_version, self.unwrap(from_version, wrapped))
