"""Cumulative series over time: GPU energy (J) and worker load (tokens, request-seconds).

Both the energy a GPU drew and the work its workers did arrive as cumulative counters sampled
at discrete times, possibly out of order, duplicated, reset (process restart, driver reload) or
wrapped. The join needs one thing from them: the increase over any interval, so everything is
normalised into a single monotonic cumulative curve that is interpolated linearly between
samples. Power-only GPUs (no energy counter) are turned into the same curve by trapezoids.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from enum import Enum

import numpy as np


class SeriesKind(Enum):
    COUNTER = "counter"  # cumulative samples (J, tokens, s)
    POWER = "power"  # instantaneous rate samples (W), integrated by trapezoids


@dataclass(frozen=True)
class IngestResult:
    accepted: bool
    reason: str = ""


class CumulativeSeries:
    """One cumulative quantity as a function of time (ns), rebuilt lazily after inserts.

    Samples are kept sorted by time; a sample at an existing timestamp replaces nothing and is
    counted as a duplicate. A counter that goes down, or whose OTLP start time moves forward, was
    reset: the increase over that sampling interval is taken to be the new value (the counter
    restarted from zero inside the interval). Samples older than ``retention_ns`` before the
    newest one are dropped, keeping the curve's value at the oldest kept sample.
    """

    __slots__ = (
        "kind",
        "retention_ns",
        "_times",
        "_values",
        "_starts",
        "_anchor",
        "_cum_times",
        "_cum",
        "_cum_list",
        "_dirty",
        "resets",
        "duplicates",
        "too_old",
    )

    def __init__(self, kind: SeriesKind = SeriesKind.COUNTER, retention_ns: int = 900 * 10**9) -> None:
        self.kind = kind
        self.retention_ns = retention_ns
        self._times: list[int] = []
        self._values: list[float] = []
        self._starts: list[int] = []
        self._anchor = 0.0  # curve value at _times[0]
        self._cum_times = np.empty(0, dtype=np.int64)
        self._cum = np.empty(0, dtype=np.float64)
        self._cum_list: list[float] = []
        self._dirty = False
        self.resets = 0
        self.duplicates = 0
        self.too_old = 0

    # ------------------------------------------------------------------ ingest
    def add(self, time_ns: int, value: float, start_time_ns: int = 0) -> IngestResult:
        if not np.isfinite(value) or (self.kind is SeriesKind.POWER and value < 0):
            return IngestResult(False, f"invalid value {value!r}")
        times = self._times
        if times and time_ns < times[0] and times[-1] - time_ns > self.retention_ns:
            self.too_old += 1
            return IngestResult(False, "older than retention")
        i = bisect.bisect_left(times, time_ns)
        if i < len(times) and times[i] == time_ns:
            self.duplicates += 1
            return IngestResult(True, "duplicate")
        if i == 0 and times:
            # A new oldest sample: the anchor moves to it, measured back from the old oldest.
            self._anchor -= self._increase(time_ns, value, start_time_ns, times[0], self._values[0], self._starts[0])
        times.insert(i, time_ns)
        self._values.insert(i, float(value))
        self._starts.insert(i, start_time_ns)
        self._dirty = True
        self._trim()
        return IngestResult(True)

    def _increase(self, t0: int, v0: float, s0: int, t1: int, v1: float, s1: int) -> float:
        """The curve's increase from sample (t0, v0) to the next sample (t1, v1)."""
        if self.kind is SeriesKind.POWER:
            return 0.5 * (v0 + v1) * (t1 - t0) * 1e-9
        if v1 < v0 or (s1 > s0 and s1 >= t0):
            return v1
        return v1 - v0

    def _trim(self) -> None:
        times = self._times
        cutoff = times[-1] - self.retention_ns
        if times[0] >= cutoff - self.retention_ns // 8:  # trim in chunks: each trim rebuilds the curve
            return
        k = bisect.bisect_left(times, cutoff)
        self._rebuild()
        self._anchor = float(self._cum[k])
        del times[:k], self._values[:k], self._starts[:k]
        self._dirty = True

    def _rebuild(self) -> None:
        if not self._dirty:
            return
        t = np.asarray(self._times, dtype=np.int64)
        v = np.asarray(self._values, dtype=np.float64)
        cum = np.empty(len(t), dtype=np.float64)
        if len(t):
            if self.kind is SeriesKind.POWER:
                inc = 0.5 * (v[1:] + v[:-1]) * np.diff(t) * 1e-9
            else:
                s = np.asarray(self._starts, dtype=np.int64)
                diff = np.diff(v)
                reset = (diff < 0) | ((s[1:] > s[:-1]) & (s[1:] >= t[:-1]))
                inc = np.where(reset, v[1:], diff)
                self.resets = int(reset.sum())
            cum[0] = self._anchor
            np.cumsum(inc, out=cum[1:])
            cum[1:] += self._anchor
        self._cum_times, self._cum, self._cum_list, self._dirty = t, cum, cum.tolist(), False

    # ------------------------------------------------------------------ queries
    def __len__(self) -> int:
        return len(self._times)

    @property
    def oldest_ns(self) -> int | None:
        return self._times[0] if self._times else None

    @property
    def newest_ns(self) -> int | None:
        return self._times[-1] if self._times else None

    def curve(self) -> tuple[np.ndarray, np.ndarray]:
        """(times, cumulative values): the normalised monotonic curve."""
        self._rebuild()
        return self._cum_times, self._cum

    def points(self) -> tuple[list[int], list[float]]:
        """(times, cumulative values) as lists: cheaper than arrays for the few points a span touches."""
        self._rebuild()
        return self._times, self._cum_list

    def values_at(self, times_ns: list[int]) -> list[float]:
        """Curve value at each (sorted) time, held flat outside the sampled range; pure Python."""
        times, cum = self.points()
        n = len(times)
        if n == 0:
            return [0.0] * len(times_ns)
        out = []
        for t in times_ns:
            i = bisect.bisect_right(times, t)
            if i == 0:
                out.append(cum[0])
            elif i == n:
                out.append(cum[-1])
            else:
                t0, t1 = times[i - 1], times[i]
                c0 = cum[i - 1]
                out.append(c0 + (cum[i] - c0) * (t - t0) / (t1 - t0))
        return out

    def value_at(self, times_ns: np.ndarray) -> np.ndarray:
        """Curve value at each time; held flat outside the sampled range (no extrapolation)."""
        t, c = self.curve()
        if len(t) == 0:
            return np.zeros(len(times_ns))
        # Epoch nanoseconds do not fit a float64 exactly (~256 ns steps): interpolate on offsets.
        base = t[0]
        return np.interp((np.asarray(times_ns, dtype=np.int64) - base).astype(np.float64),
                         (t - base).astype(np.float64), c)

    def increase(self, a_ns: int, b_ns: int) -> float:
        v = self.value_at(np.array([a_ns, b_ns], dtype=np.int64))
        return float(v[1] - v[0])

    def last_rate(self) -> float:
        """Rate over the newest sampling interval (per second): extrapolates past the newest sample."""
        t, c = self.curve()
        if len(t) < 2:
            return 0.0
        if self.kind is SeriesKind.POWER:
            return self._values[-1]
        return float((c[-1] - c[-2]) / ((t[-1] - t[-2]) * 1e-9))

    def first_rate(self) -> float:
        """Rate over the oldest sampling interval (per second): extrapolates before the oldest sample."""
        t, c = self.curve()
        if len(t) < 2:
            return 0.0
        if self.kind is SeriesKind.POWER:
            return self._values[0]
        return float((c[1] - c[0]) / ((t[1] - t[0]) * 1e-9))
