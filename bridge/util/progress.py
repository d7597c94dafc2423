"""Progress lines for long admin commands: how many of how many, and the time left."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Prints a line each time another tenth of the work is done (so a short run stays short
    and a long one shows it is moving), with an estimate of the time left."""

    def __init__(self, total: int, what: str, stream: TextIO | None = None) -> None:
        self.total = total
        self.what = what
        self.stream = stream or sys.stdout
        self._started = time.monotonic()
        self._tenths_shown = 0

    def __call__(self, done: int) -> None:
        if self.total <= 0:
            return
        tenths = min(10, done * 10 // self.total)
        if tenths <= self._tenths_shown:
            return
        self._tenths_shown = tenths
        elapsed = time.monotonic() - self._started
        line = f"  {done:,} of {self.total:,} {self.what} ({done * 100 // self.total}%)"
        if done < self.total:
            left = elapsed / done * (self.total - done)
            line += f", about {_duration(left)} left"
        print(line, file=self.stream, flush=True)


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{max(1, round(seconds))} s"
    if seconds < 3600:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"
