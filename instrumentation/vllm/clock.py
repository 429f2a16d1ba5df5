"""Map vLLM's monotonic timestamps onto wall-clock nanoseconds.

vLLM stamps a request's queue, schedule and token events with ``time.monotonic()`` in the
EngineCore process, but spans and energy samples live on the wall clock (OTLP epoch ns). On Linux
``CLOCK_MONOTONIC`` is one clock for every process of a host, so one offset ``wall - monotonic``
measured once per process maps any of the host's monotonic stamps. Measuring it once (not per
event) keeps the spans of a request consistent with each other even if NTP slews the wall clock
later; the offset is taken as the tightest of a few bracketed reads so that a preemption between
the two clock reads does not skew it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

NS_PER_S = 1_000_000_000


@dataclass(frozen=True, slots=True)
class ClockAlignment:
    """``wall_ns = monotonic_ns + offset_ns``; ``uncertainty_ns`` is half the tightest bracket."""

    offset_ns: int
    uncertainty_ns: int

    @classmethod
    def measure(
        cls,
        reads: int = 16,
        monotonic_ns: Callable[[], int] = time.monotonic_ns,
        wall_ns: Callable[[], int] = time.time_ns,
    ) -> ClockAlignment:
        best: tuple[int, int] | None = None
        for _ in range(max(1, reads)):
            before = monotonic_ns()
            wall = wall_ns()
            after = monotonic_ns()
            width = after - before
            if best is None or width < best[0]:
                best = (width, wall - (before + after) // 2)
        assert best is not None
        return cls(offset_ns=best[1], uncertainty_ns=best[0] // 2)

    def wall_ns(self, monotonic_s: float) -> int:
        """Wall-clock ns of a ``time.monotonic()`` reading (seconds, float)."""
        return round(monotonic_s * NS_PER_S) + self.offset_ns

    def monotonic_s(self, wall_ns: int) -> float:
        return (wall_ns - self.offset_ns) / NS_PER_S


_process_alignment: ClockAlignment | None = None


def process_alignment() -> ClockAlignment:
    """The one alignment of this process, measured on first use."""
    global _process_alignment
    if _process_alignment is None:
        _process_alignment = ClockAlignment.measure()
    return _process_alignment
