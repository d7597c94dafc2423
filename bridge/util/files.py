"""Writing files that hold secrets."""

from __future__ import annotations

import os
from pathlib import Path


def write_private(path: str | Path, text: str) -> None:
    """Write a file readable by its owner only, atomically and durably: a crash leaves either
    the old file or the new one, never half of one."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as stream:
        stream.write(text)
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(tmp, path)
