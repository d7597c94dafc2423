"""A network's SDK, imported the first time the bridge uses it, not when its connector is
loaded: an enabled network that no one has linked yet costs no SDK memory. A connector names
SDK modules through `lazy(...)` at run time and imports the real ones under `TYPE_CHECKING`,
so type hints keep working."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class LazyModule:
    """Stands for the module `name`; the first attribute read imports it. Only attribute
    reads are forwarded: classes to call, exceptions to catch, types for isinstance."""

    __slots__ = ("_module", "_name")

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attr: str) -> Any:
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attr)

    def __repr__(self) -> str:
        state = "imported" if self._module is not None else "not imported yet"
        return f"<lazy module {self._name} ({state})>"


def lazy(name: str) -> Any:
    """The module `name`, imported on first use (typed Any: the real import under
    TYPE_CHECKING gives the types)."""
    return LazyModule(name)
