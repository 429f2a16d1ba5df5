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
#: ticks whose counter change lay at the same place before them, after which polls stop (2 s at 10 Hz: a
#: counter whose period is 5 % off the interval moves to another place within ~1 s and never locks)
LOCK_AFTER_TICKS = 20

EVENT_RESET = "reset"
EVENT_WRAP = "wrap"
EVENT_SOURCE_CHANGED = "source_changed"  # counter <-> power integration: a new series


@dataclass(slots=True)  # not frozen: one per reading, and a frozen dataclass's __init__ costs 5x (setattr per field)
class Sample:
    """One reading of one GPU: the hw.energy point (``energy_j`` since ``start_time_ns``, at
    ``energy_time_ns``; all three None when this reading adds no energy point, see
    ``EnergyTracker``) and the hw.power point (``power_w`` at ``time_ns``, None when the device
    reports no power or the reading was an energy-only poll). ``event``: what the tracker
    detected at this reading, if anything."""

    gpu: GpuInfo
    time_ns: int
    start_time_ns: int | None
    energy_time_ns: int | None
    energy_j: float | None
    power_w: float | None
    event: str | None = None


class EnergyTracker:
    """One GPU's ``hw.energy`` series.

    Where to put a counter reading in time: a hardware counter only moves when the driver updates
    it (NVML: about every 100 ms), so the value read at t is the energy up to the last update,
    up to a period earlier; stamped with t, energy lands late and a short burst leaks into the
    idle time after it. With ``read_period_ns`` > 0 the tracker places a change seen between two
    reads no more than 1.5 read periods apart at the midpoint of the two (the update happened
    between them: error within half a read period, zero on average), or at the later read when
    the earlier one had changed too (the counter updates at least as often as it is read, so the
    later read is the fresher estimate). With ``polled`` the sampler reads the counter between
    its ticks (``poll``) while the tracker is ``armed``: a tick whose reading cannot be placed
    (unchanged, or changed since a read long ago) arms it, and the first placed change disarms it
    (the sampler still polls every counter once just before each tick, so that an update landing
    right before the tick is placed too): about one energy point per interval or per counter
    update, whichever is rarer, each at the counter's update.

    Polls cost a wake-up each, and a counter that updates as often as the ticks (NVML's ~100 ms
    against the default 100 ms interval) lands at the same place between two ticks every time. So
    the tracker learns that place: at each tick it notes how long before the tick the change it
    last placed between two reads lies; after ``LOCK_AFTER_TICKS`` ticks that agree (within a
    quarter of a read period) it is ``locked`` and needs no polls: a tick that sees the counter
    changed since the previous tick stamps the change that long before itself, where the polls
    would have put it. Only a counter that changes once per interval locks (one that moves more
    often is read fresh, or, at a long interval, placed by the polls at each of its updates). It
    unlocks, and polls again, when a tick finds the counter unchanged, or when a verification
    (``verify()``: polls for one interval; the sampler asks for one every ``VERIFY_EVERY_TICKS``)
    places the change elsewhere; a counter whose updates do not keep one place (another period,
    jitter) never locks and is polled as before.
    A counter that has not moved for ``stale_after_ns`` gets a point at the tick's read time, so
    a stalled counter still shows. Without ``read_period_ns`` every reading is stamped with its
    read time.
    """

    def __init__(
        self, gpu: GpuInfo, read_period_ns: int = 0, *, polled: bool = False, stale_after_ns: int = 0
    ) -> None:
        self.gpu = gpu
        self.resets = 0
        self.wraps = 0
        self.armed = False
        self._bracket_ns = read_period_ns * 3 // 2
        self._polled = polled
        self._stale_after_ns = stale_after_ns
        self._mode: str | None = None  # "counter" | "power"
        self._start_ns = 0
        self._total_j = 0.0
        self._last_time_ns = 0  # time of the last energy point
        self._last_raw_j = 0.0  # counter mode: the raw counter value at the last energy point
        self._last_power_w = 0.0  # power mode: the last power reading
        self._read_ns = 0  # counter mode: the previous read, its value, and whether it had changed
        self._read_raw_j = 0.0
        self._read_changed = True
        self._tolerance_ns = read_period_ns // 4  # places are a half read period apart or more
        self._tick_ns = 0  # the previous tick's read
        self._bracketed_ns: int | None = None  # the last change placed between two close reads
        self._lead_ns = 0  # how long before a tick its counter change lies (learned)
        self._agreeing_ticks = 0
        self._changes = 0  # changes seen since the previous tick
        #: True while the counter's changes are placed from the learned lead, without polls
        self.locked = False

    def update(self, reading: Reading) -> Sample | None:
        """A tick's reading: its sample, or None when it carries neither energy nor power."""
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
            self.armed, self.locked, self._agreeing_ticks = False, False, 0
            if mode == "counter":
                self._last_raw_j = self._read_raw_j = reading.energy_j
                self._read_ns, self._read_changed = time_ns, True
        elif mode == "counter":
            return self._counter(reading.time_ns, reading.energy_j, reading.power_w, tick=True)
        elif time_ns <= self._last_time_ns:
            return None  # a clock step backwards: nothing sensible to add
        else:
            self._total_j += 0.5 * (self._last_power_w + reading.power_w) * (time_ns - self._last_time_ns) * 1e-9
        if mode == "power":
            self._last_power_w = reading.power_w
        self._last_time_ns = time_ns
        return Sample(self.gpu, reading.time_ns, self._start_ns, time_ns, self._total_j, reading.power_w, event)

    @property
    def counting(self) -> bool:
        """True while the series comes from an energy counter (what polls read)."""
        return self._mode == "counter"

    def verify(self) -> None:
        """Until the next tick, be polled as an unlocked tracker is, and check the change that
        places against the learned lead."""
        if self.locked:
            self.armed, self.locked = True, False

    def poll(self, time_ns: int, raw_j: float) -> Sample | None:
        """An energy-only read between ticks: the sample when it places a change."""
        if raw_j == self._read_raw_j and time_ns > self._read_ns:  # the common case, kept cheap
            self._read_ns, self._read_changed = time_ns, False
            return None
        sample = self._counter(time_ns, raw_j, None, tick=False)
        return sample if sample.energy_j is not None else None

    def _counter(self, time_ns: int, raw_j: float, power_w: float | None, tick: bool) -> Sample:
        if time_ns <= self._read_ns:  # a clock step backwards: nothing sensible to add
            return Sample(self.gpu, time_ns, None, None, None, power_w)
        gap = time_ns - self._read_ns
        changed = fresh = raw_j != self._read_raw_j
        at: int | None = None
        if changed and gap <= self._bracket_ns:
            at = time_ns if self._read_changed else self._read_ns + gap // 2
            self._bracketed_ns = at
        elif changed and tick and self.locked:
            at = max(time_ns - self._lead_ns, self._read_ns + 1)  # where the polls would have placed it
            fresh = False  # a change over a whole interval says nothing of how often the counter moves
        elif changed and not (self._polled and tick):
            at = time_ns  # no closer read to place it by, and none is coming before the next tick
        elif tick and time_ns - self._last_time_ns >= self._stale_after_ns:
            at = time_ns  # polling has not placed a change for a while (stalled counter, busy machine)
        self._changes += changed
        if tick and self._polled:
            self._learn_lead(time_ns)
        self._read_ns, self._read_raw_j, self._read_changed = time_ns, raw_j, fresh
        if at is None:
            self.armed = self._polled and not self.locked
            return Sample(self.gpu, time_ns, None, None, None, power_w)
        self.armed = False
        at = max(at, self._last_time_ns + 1)
        event = self._add_counter(raw_j, at)
        self._last_raw_j, self._last_time_ns = raw_j, at
        return Sample(self.gpu, time_ns, self._start_ns, at, self._total_j, power_w, event)

    def _learn_lead(self, tick_ns: int) -> None:
        """At a tick: did the counter change once since the previous tick, placed between two
        reads as long before this tick as the changes before it? (Locked and not verifying, the
        change was placed from the lead: nothing learned, but a counter that did not move unlocks.)"""
        if self.locked and self._changes == 1 and self._bracketed_ns is None:
            self._tick_ns, self._changes = tick_ns, 0  # once learned, the common tick: the rest changes nothing
            return
        placed, self._bracketed_ns = self._bracketed_ns, None
        if placed is not None and placed <= self._tick_ns:
            placed = None  # placed in an earlier interval
        changes, self._changes = self._changes, 0
        predicted = self.locked  # this interval's change was placed from the lead, not polled for
        self._tick_ns = tick_ns
        if changes != 1:
            self._agreeing_ticks = 0  # a skipped update, or a counter that moves more often than the ticks
        elif placed is None:
            if not predicted:
                self._agreeing_ticks = 0  # polled, yet no change placed between close reads
        elif self._agreeing_ticks and abs(tick_ns - placed - self._lead_ns) < self._tolerance_ns:
            self._lead_ns, self._agreeing_ticks = tick_ns - placed, self._agreeing_ticks + 1  # follows a slow drift
        else:
            self._lead_ns, self._agreeing_ticks = tick_ns - placed, 1
        self.locked = self._agreeing_ticks >= LOCK_AFTER_TICKS  # a verification ends here

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
