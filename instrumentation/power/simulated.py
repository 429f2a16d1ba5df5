"""Simulated GPUs of real models, for demos, tests and accuracy benchmarks without hardware.

A ``SimulatedGpu`` draws idle + (max - idle) x utilisation watts (figures per model from
``processors/data/gpu_power.csv``), or whatever a caller-supplied ``power_fn`` says, and knows
the exact energy it drew over any interval (``true_energy_j``): that is the ground truth the
sampler and the carbon join are checked against (a caller that knows its power's exact integral,
as the fleet simulator's step timelines do, passes it as ``energy_fn`` with the ``power_fn``).
It reports what a real driver reports, with the same imperfections: an energy counter that only
moves every ``counter_update_ns`` (NVML updates it about every 100 ms) and a power figure averaged
over the last ``power_window_ns`` (NVML on Ampere and newer: 1 s).

Time comes only from the injected ``clock`` (ns), so a simulation can run on a simulated clock
far faster than real time.
"""

from __future__ import annotations

import bisect
import re
import time
import uuid as uuid_module
from collections.abc import Callable, Sequence

from carbonspan.instrumentation.power.source import GpuInfo, Reading, SourceError
from carbonspan.processors.gpu_profiles import known_models, power_profile

Clock = Callable[[], int]
#: step of the numerical integration of a caller-supplied power_fn (1 ms: far below any sampling interval).
POWER_FN_STEP_NS = 1_000_000


class SimulatedGpu:
    def __init__(
        self,
        model: str,
        uuid: str | None = None,
        *,
        clock: Clock = time.time_ns,
        counter_update_ns: int = 100_000_000,
        counter_phase_ns: int = 0,
        power_window_ns: int = 1_000_000_000,
        power_fn: Callable[[int], float] | None = None,
        energy_fn: Callable[[int], float] | None = None,
        has_energy_counter: bool = True,
        energy_wrap_j: float | None = None,
    ) -> None:
        profile = power_profile(model)
        if profile is None:
            raise ValueError(f"unknown GPU model {model!r}; known: {', '.join(known_models())}")
        if counter_update_ns < 1 or power_window_ns < 0:
            raise ValueError("counter_update_ns must be >= 1 and power_window_ns >= 0")
        if energy_fn is not None and power_fn is None:
            raise ValueError("energy_fn is the integral of a power_fn: give both")
        self.profile = profile
        self.uuid = uuid or f"GPU-{uuid_module.uuid4()}"
        self.clock = clock
        self.counter_update_ns = counter_update_ns
        self.counter_phase_ns = counter_phase_ns  # the counter updates at origin + phase + k x counter_update_ns
        self.power_window_ns = power_window_ns
        self.has_energy_counter = has_energy_counter
        self.energy_wrap_j = energy_wrap_j
        self.origin_ns = clock()
        self._power_fn = power_fn
        self._energy_fn = energy_fn
        self._energy_fn_origin_j = energy_fn(self.origin_ns) if energy_fn else 0.0
        # Piecewise-constant utilisation: breakpoints, the utilisation from each, and the energy
        # drawn from origin_ns up to each breakpoint (a prefix sum, recomputed from an insertion on).
        self._times: list[int] = [self.origin_ns]
        self._utils: list[float] = [0.0]
        self._cum: list[float] = [0.0]
        # power_fn integration checkpoints (time, energy since origin), sorted by time.
        self._checkpoints: list[tuple[int, float]] = [(self.origin_ns, 0.0)]
        self._counter_offset_j = 0.0  # subtracted from the counter after a simulated driver reload

    # ------------------------------------------------------------------ the load signal
    def set_utilization(self, utilization: float, at_ns: int | None = None) -> None:
        """From ``at_ns`` (default: now) on, the GPU runs at ``utilization`` (0..1) until the next change."""
        if self._power_fn is not None:
            raise RuntimeError("this GPU follows its power_fn; set_utilization does not apply")
        if not 0.0 <= utilization <= 1.0:
            raise ValueError(f"utilization must be within [0, 1], got {utilization}")
        at = self.clock() if at_ns is None else at_ns
        if at < self.origin_ns:
            raise ValueError("cannot change the utilisation before the GPU was created")
        i = bisect.bisect_left(self._times, at)
        if i < len(self._times) and self._times[i] == at:
            self._utils[i] = utilization
        else:
            self._times.insert(i, at)
            self._utils.insert(i, utilization)
            self._cum.insert(i, 0.0)
        for k in range(max(i, 1), len(self._times)):
            span_s = (self._times[k] - self._times[k - 1]) * 1e-9
            self._cum[k] = self._cum[k - 1] + self._power(self._utils[k - 1]) * span_s

    def _power(self, utilization: float) -> float:
        return self.profile.power_at(utilization)

    def power_at(self, t_ns: int) -> float:
        """The true instantaneous power (W) at ``t_ns``."""
        if self._power_fn is not None:
            return float(self._power_fn(t_ns))
        i = max(bisect.bisect_right(self._times, t_ns) - 1, 0)
        return self._power(self._utils[i])

    # ------------------------------------------------------------------ ground truth
    def energy_since_origin_j(self, t_ns: int) -> float:
        """Exact energy (J) drawn from creation to ``t_ns`` (negative before creation, idle there)."""
        if self._energy_fn is not None:
            return self._energy_fn(t_ns) - self._energy_fn_origin_j
        if self._power_fn is not None:
            return self._integrated(t_ns)
        i = max(bisect.bisect_right(self._times, t_ns) - 1, 0)
        return self._cum[i] + self._power(self._utils[i]) * (t_ns - self._times[i]) * 1e-9

    def true_energy_j(self, a_ns: int, b_ns: int) -> float:
        return self.energy_since_origin_j(b_ns) - self.energy_since_origin_j(a_ns)

    def _integrated(self, t_ns: int) -> float:
        """Simpson's rule on steps of at most POWER_FN_STEP_NS, from the nearest checkpoint before t."""
        k = bisect.bisect_right(self._checkpoints, (t_ns, float("inf"))) - 1
        if k < 0:
            return -self._simpson(t_ns, self.origin_ns)
        t0, energy = self._checkpoints[k]
        energy += self._simpson(t0, t_ns)
        if k == len(self._checkpoints) - 1 and t_ns > t0:
            self._checkpoints.append((t_ns, energy))
        return energy

    def _simpson(self, a_ns: int, b_ns: int) -> float:
        if b_ns <= a_ns:
            return 0.0
        n = max(2, -(-(b_ns - a_ns) // POWER_FN_STEP_NS))
        n += n % 2
        h = (b_ns - a_ns) / n
        f = self._power_fn
        total = f(a_ns) + f(b_ns)
        total += 4 * sum(f(round(a_ns + (2 * j - 1) * h)) for j in range(1, n // 2 + 1))
        total += 2 * sum(f(round(a_ns + 2 * j * h)) for j in range(1, n // 2))
        return total * h / 3 * 1e-9

    # ------------------------------------------------------------------ what a driver would report
    def counter_j(self, t_ns: int) -> float:
        """The hardware energy counter at ``t_ns``: energy up to its last update, after any
        simulated reload, modulo ``energy_wrap_j``."""
        updated = t_ns - (t_ns - self.origin_ns - self.counter_phase_ns) % self.counter_update_ns
        value = self.energy_since_origin_j(updated) - self._counter_offset_j
        return value % self.energy_wrap_j if self.energy_wrap_j else value

    def reported_power_w(self, t_ns: int) -> float:
        if self.power_window_ns == 0:
            return self.power_at(t_ns)
        return self.true_energy_j(t_ns - self.power_window_ns, t_ns) / (self.power_window_ns * 1e-9)

    def reload_driver(self, at_ns: int | None = None) -> None:
        """Simulate a driver reload: the energy counter restarts from zero at ``at_ns`` (default now)."""
        at = self.clock() if at_ns is None else at_ns
        self._counter_offset_j = self.energy_since_origin_j(at)

    def read(self) -> Reading:
        t = self.clock()
        energy = self.counter_j(t) if self.has_energy_counter else None
        return Reading(t, energy, self.reported_power_w(t))

    def read_energy(self) -> float | None:
        return self.counter_j(self.clock()) if self.has_energy_counter else None


class SimulatedPowerSource:
    """A node of simulated GPUs, read like NVML or AMD SMI."""

    def __init__(self, gpus: Sequence[SimulatedGpu], clock: Clock | None = None) -> None:
        self._gpus = list(gpus)
        self.clock = clock or (self._gpus[0].clock if self._gpus else time.time_ns)
        self.failing: set[int] = set()  # indexes whose reads raise, to rehearse driver errors

    @classmethod
    def from_spec(cls, spec: str, clock: Clock = time.time_ns, **gpu_options) -> SimulatedPowerSource:
        """``"H100 SXM x4"`` -> four simulated H100 SXM (``--simulate``); several specs joined by ','."""
        gpus = []
        for part in spec.split(","):
            match = re.fullmatch(r"\s*(.+?)(?:\s*[x\u00d7]\s*(\d+))?\s*", part)
            if not match or not match.group(1):
                raise ValueError(f"cannot read GPU spec {part!r}; expected e.g. 'H100 SXM x4'")
            count = int(match.group(2) or 1)
            gpus += [SimulatedGpu(match.group(1), clock=clock, **gpu_options) for _ in range(count)]
        return cls(gpus, clock)

    @property
    def simulated(self) -> list[SimulatedGpu]:
        return list(self._gpus)

    def gpus(self) -> list[GpuInfo]:
        return [
            GpuInfo(
                index=i,
                uuid=g.uuid,
                model=g.profile.model,
                vendor=g.profile.vendor.lower(),
                power_window_ns=g.power_window_ns,
                energy_wrap_j=g.energy_wrap_j,
            )
            for i, g in enumerate(self._gpus)
        ]

    def read(self, index: int) -> Reading:
        if index in self.failing:
            raise SourceError(f"simulated driver error on GPU {index}")
        return self._gpus[index].read()

    def read_energy(self, index: int) -> float | None:
        if index in self.failing:
            raise SourceError(f"simulated driver error on GPU {index}")
        return self._gpus[index].read_energy()

    def close(self) -> None:
        pass
