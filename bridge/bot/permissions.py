"""The bot's view of `bridge.permissions`; the logic lives in `security.permissions`, shared
with the provisioning API and the pages."""

from __future__ import annotations

from ..security.permissions import ACTION_LEVELS, Level, Permissions

__all__ = ["ACTION_LEVELS", "Level", "Permissions"]
