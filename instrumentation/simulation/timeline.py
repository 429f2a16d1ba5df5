"""A GPU's true power as a step function of time, and its exact energy over any interval.

The simulator knows the power of every step it runs, so the ground truth needs no numerical
integration: the energy between two times is read off a running sum at the step edges.
"""

from __future__ import annotations

import bisect


class PowerTimeline:
    """Piecewise-constant power (W) from ``start_ns`` on; the last level holds until changed.

    Levels are set in time order only (the simulator never rewrites the past); setting a level
    at the time of the newest edge replaces it, which is how a step that starts exactly when the
    previous one ends takes over from the idle level booked after it.
    """

    __slots__ = ("_times", "_watts", "_cum")

    def __init__(self, start_ns: int, watts: float) -> None:
        self._times = [start_ns]
        self._watts = [float(watts)]
        self._cum = [0.0]  # energy (J) from start_ns to each edge

    def set(self, time_ns: int, watts: float) -> None:
        last = self._times[-1]
        if time_ns < last:
            raise ValueError(f"power level set at {time_ns} before the newest edge {last}")
        if time_ns == last:
            self._watts[-1] = float(watts)
            return
        self._cum.append(self._cum[-1] + self._watts[-1] * (time_ns - last) * 1e-9)
        self._times.append(time_ns)
        self._watts.append(float(watts))

    def power_at(self, time_ns: int) -> float:
        i = bisect.bisect_right(self._times, time_ns) - 1
        return self._watts[max(i, 0)]

    def energy_until(self, time_ns: int) -> float:
        """Energy (J) from the timeline's start to ``time_ns`` (0 before the start)."""
        i = bisect.bisect_right(self._times, time_ns) - 1
        if i < 0:
            return 0.0
        return self._cum[i] + self._watts[i] * (time_ns - self._times[i]) * 1e-9

    def energy_between(self, a_ns: int, b_ns: int) -> float:
        return self.energy_until(b_ns) - self.energy_until(a_ns)

    def forget_before(self, time_ns: int) -> None:
        """Drop edges older than ``time_ns`` (keeping the level in force then): bounds memory on
        long runs. Energies stay measured from the original start."""
        i = bisect.bisect_right(self._times, time_ns) - 1
        if i > 0:
            del self._times[:i], self._watts[:i], self._cum[:i]

    def __len__(self) -> int:
        return len(self._times)
