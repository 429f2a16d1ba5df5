"""From one GPU's raw readings to the points of its ``hw.energy`` series.

``hw.energy`` is an OTLP cumulative monotonic Sum: each point is the energy since the point's
``start_time``. Where the device has an energy counter the increments of the counter are summed;
a counter that goes down either wrapped (the increment across the wrap is plausible) or was
reset by a driver reload, and a reset starts a new series with a new start time, which is how
OTLP says "this counter restarted" and how the collector's series recognise it. Where the device
reports power only, power is integrated by trapezoids, each reading placed at the centre of the
window the driver averaged it over.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from carbonspan.instrumentation.power.source import GpuInfo, Reading

logger = logging.getLogger(__name__)

#: no board draws more: an apparent wrap implying more power than this was a reset.
MAX_PLAUSIBLE_POWER_W = 5_000.0

EVENT_RESET = "reset"
EVENT_WRAP = "wrap"
EVENT_SOURCE_CHANGED = "source_changed"  # counter <-> power integration: a new series


@dataclass(frozen=True, slots=True)
class Sample:
    """One tick of one GPU: the hw.energy point (``energy_j`` since ``start_time_ns``, at
    ``energy_time_ns``) and the hw.power point (``power_w`` at ``time_ns``, None when the device
    reports no power). ``event``: what the tracker detected at this tick, if anything."""

    gpu: GpuInfo
    time_ns: int
    start_time_ns: int
    energy_time_ns: int
    energy_j: float
    power_w: float | None
    event: str | None = None


class EnergyTracker:
    def __init__(self, gpu: GpuInfo) -> None:
        self.gpu = gpu
        self.resets = 0
        self.wraps = 0
        self._mode: str | None = None  # "counter" | "power"
        self._start_ns = 0
        self._total_j = 0.0
        self._last_time_ns = 0  # time of the last energy point
        self._last_raw_j = 0.0  # counter mode: the last raw counter value
        self._last_power_w = 0.0  # power mode: the last power reading

    def update(self, reading: Reading) -> Sample | None:
        """The sample for this reading, or None when it carries neither energy nor power."""
        if reading.energy_j is not None:
            mode, time_ns = "counter", reading.time_ns
        elif reading.power_w is not None:
            mode, time_ns = "power", reading.time_ns - self.gpu.power_window_ns // 2
        else:
            return None
        event = None
        if self._mode is None or mode != self._mode:
            if self._mode is not None:
                event = EVENT_SOURCE_CHANGED
                logger.warning("GPU %s: energy now from %s readings: starting a new series", self.gpu.uuid, mode)
                time_ns = max(time_ns, self._last_time_ns + 1)
            self._mode, self._start_ns, self._total_j = mode, time_ns, 0.0
        elif time_ns <= self._last_time_ns:
            return None  # a clock step backwards: nothing sensible to add
        elif mode == "counter":
            event = self._add_counter(reading.energy_j, time_ns)
        else:
            self._total_j += 0.5 * (self._last_power_w + reading.power_w) * (time_ns - self._last_time_ns) * 1e-9
        if mode == "counter":
            self._last_raw_j = reading.energy_j
        else:
            self._last_power_w = reading.power_w
        self._last_time_ns = time_ns
        return Sample(self.gpu, reading.time_ns, self._start_ns, time_ns, self._total_j, reading.power_w, event)

    def _add_counter(self, raw_j: float, time_ns: int) -> str | None:
        delta = raw_j - self._last_raw_j
        if delta >= 0:
            self._total_j += delta
            return None
        wrap_j = self.gpu.energy_wrap_j
        elapsed_s = (time_ns - self._last_time_ns) * 1e-9
        if wrap_j and delta + wrap_j <= MAX_PLAUSIBLE_POWER_W * elapsed_s:
            self.wraps += 1
            self._total_j += delta + wrap_j
            logger.info("GPU %s: energy counter wrapped", self.gpu.uuid)
            return EVENT_WRAP
        # The counter restarted (driver reload) somewhere after the last reading: what it reads
        # now is the energy since then, in a new series that starts just after the last reading.
        self.resets += 1
        logger.warning(
            "GPU %s: energy counter went from %.3f J to %.3f J (driver reload?): new series",
            self.gpu.uuid, self._last_raw_j, raw_j,
        )
        self._start_ns = self._last_time_ns + 1
        self._total_j = raw_j
        return EVENT_RESET
