"""RelayForge: a Matrix application-service bridge with per-profile identities."""

__version__ = "0.1.0"
