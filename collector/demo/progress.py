"""A one-line progress bar on stderr, redrawn with ``\\r``: enough for a command that runs a minute,
and no dependency for it. When stderr is not a terminal (CI logs, a test) it writes one line per
update step instead, so that logs stay readable."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

WIDTH = 30


class Progress:
    def __init__(self, target: int, *, approximate: bool = False, stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic, min_interval_s: float = 0.2) -> None:
        self.target = max(1, target)
        self._approx = "~" if approximate else ""
        self.stream = stream if stream is not None else sys.stderr
        self._clock = clock
        self._start = clock()
        self._last_draw = float("-inf")
        self._min_interval_s = min_interval_s if self.stream.isatty() else 5.0
        self._tty = self.stream.isatty()

    def elapsed_s(self) -> float:
        return self._clock() - self._start

    def line(self, done: int, note: str = "") -> str:
        fraction = min(1.0, done / self.target)
        filled = round(fraction * WIDTH)
        bar = "#" * filled + "-" * (WIDTH - filled)
        return (f"[{bar}] {done}/{self._approx}{self.target} requests finished  {self.elapsed_s():5.1f} s elapsed"
                + (f"  {note}" if note else ""))

    def update(self, done: int, note: str = "", *, final: bool = False) -> None:
        now = self._clock()
        if not final and now - self._last_draw < self._min_interval_s:
            return
        self._last_draw = now
        text = self.line(done, note)
        if self._tty:
            self.stream.write("\r" + text + ("\n" if final else "\x1b[K"))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
