"""The sampler: reads every GPU on a steady schedule and hands each reading, with its own
timestamp, to a metric sink (normally ``TimestampedMetricBatcher``, which sends them in batches).

Every ``interval`` a tick reads each GPU's energy and power. Between ticks, every
``energy_poll`` (default 50 ms), it reads the energy counter of the GPUs whose tracker is armed,
to catch the moment the driver updates the counter (NVML: every ~100 ms) and stamp the energy
point there rather than at a read up to 100 ms after the update (see ``EnergyTracker``). A GPU
stops being polled once its update is caught, until the poll just before the next tick; once its
tracker has learned where between two ticks its counter changes (``locked``), it is not polled
at all but for one interval every ``VERIFY_EVERY_TICKS`` ticks. So the thread mostly sleeps, and
wakes only for the ticks once every counter's place is learned.

Two ways to drive it. ``step(slot)`` runs one slot of the grid (a tick, ``sample_once()``, every
``polls_per_tick`` slots; a poll, ``poll_once()``, in the others) and returns the samples; no
threads, no sleeping, so a simulation can call it on a simulated clock as fast as it likes, at
slot x ``poll_ns``. ``start()`` / ``stop()`` run the same steps on a thread on a fixed grid
(start + k x poll): the thread sleeps to its next slot rather than for a period, so it does not
drift, skips the slots with nothing to poll, and a tick missed because the machine stalled is
skipped, not bunched up.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from carbonspan.instrumentation.power.energy import EnergyTracker, Sample
from carbonspan.instrumentation.power.source import GpuInfo, NotSupported, PowerSource, SourceError
from carbonspan.processors import semconv
from carbonspan.processors.otlp import AttributeValue

logger = logging.getLogger(__name__)

SCOPE_NAME = "carbonspan.instrumentation.power"
#: One poll between two ticks: NVML's counter update (~every 100 ms) is placed within +-25 ms, which
#: keeps the accuracy goal with margin (bench/ACCURACY.md: median 0.63 %, 1.06 % with each GPU at its own
#: phase; goal < 2 %), at 20 wake-ups a second. 20 ms polls place it within +-10 ms (median 0.47 %/0.56 %)
#: but wake the thread ~50 times a second, since 8 GPUs update at independent phases: 1.2-1.8 % of a core
#: against 0.7-0.8 % (bench/sampler_cpu.py, docs/sampler.md "Cost").
DEFAULT_ENERGY_POLL_S = 0.05
#: the OTLP protocol when OTEL_EXPORTER_OTLP_[METRICS_]PROTOCOL does not say: the OTel spec's default,
#: and cheaper here than gRPC (whose C-core threads wake ~30 times per export; docs/sampler.md "Cost").
DEFAULT_PROTOCOL = "http/protobuf"  # otlp_push.PROTOCOL_HTTP_PROTOBUF (otlp_push is imported when used)
#: a counter that has not moved for this many intervals gets a point at the tick anyway.
STALE_TICKS = 5
#: every this many ticks the locked trackers are polled for one interval, to check their learned place:
#: a counter whose update moved (a driver reload; a clock drifting against the host's, at 100 ppm, moves
#: it by 0.5 ms in that time) is placed up to half a poll period off for at most 5 s at 10 Hz. A counter
#: that stops is caught at the next tick. Every 10 ticks cost ~0.02 % of a core more (bench/sampler_cpu.py).
VERIFY_EVERY_TICKS = 50


class MetricSink(Protocol):
    """What the sampler writes to; ``TimestampedMetricBatcher`` is one. The sampler asks for each
    GPU's two series once and hands over each tick's points in one call (one lock, no lookups)."""

    def series(
        self, name: str, unit: str, attributes: Mapping[str, AttributeValue], *, is_sum: bool, monotonic: bool = False
    ) -> tuple:
        """A handle h: ``h + (start_time_ns, time_ns, value)`` is one point of the series."""
        ...

    def add_points(self, points: list[tuple]) -> None: ...


def gpu_attributes(gpu: GpuInfo) -> dict[str, AttributeValue]:
    return {
        semconv.HW_ID: gpu.uuid,
        semconv.HW_TYPE: semconv.HW_TYPE_GPU,
        semconv.HW_VENDOR: gpu.vendor,
        semconv.HW_MODEL: gpu.model,
    }


@dataclass
class GpuStats:
    samples: int = 0
    polls: int = 0
    errors: int = 0
    failing: bool = False


class PowerSampler:
    def __init__(
        self,
        source: PowerSource,
        sink: MetricSink | None,
        interval_s: float = 0.1,
        clock: Callable[[], int] = time.time_ns,
        energy_poll_s: float | None = DEFAULT_ENERGY_POLL_S,
    ) -> None:
        """``energy_poll_s``: the period of the energy polls between ticks; None (or a period
        over two thirds of the interval) reads the counter at the ticks only."""
        if interval_s <= 0 or (energy_poll_s is not None and energy_poll_s <= 0):
            raise ValueError("interval_s and energy_poll_s must be positive")
        self.source = source
        self.sink = sink
        self.interval_ns = round(interval_s * 1e9)
        self.polls_per_tick = max(1, round(interval_s / energy_poll_s)) if energy_poll_s else 1
        self.poll_ns = self.interval_ns // self.polls_per_tick
        self.clock = clock
        self.gpus = source.gpus()
        polled = self.polls_per_tick > 1
        self.trackers = {
            g.index: EnergyTracker(g, self.poll_ns, polled=polled, stale_after_ns=STALE_TICKS * self.interval_ns)
            for g in self.gpus
        }
        self.stats = {g.index: GpuStats() for g in self.gpus}
        self._attributes = {g.index: gpu_attributes(g) for g in self.gpus}
        #: per GPU, the handles of its hw.energy and hw.power series in the sink
        self._series = {} if sink is None else {
            g.index: (sink.series(semconv.HW_ENERGY, semconv.UNIT_JOULE, self._attributes[g.index], is_sum=True,
                                  monotonic=True),
                      sink.series(semconv.HW_POWER, semconv.UNIT_WATT, self._attributes[g.index], is_sum=False))
            for g in self.gpus
        }
        self._active = [g.index for g in self.gpus]
        self.missed_ticks = 0
        self._ticks = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ one step
    def sample_once(self) -> list[Sample]:
        """Read every GPU once; a GPU that fails is logged and skipped, the others are read."""
        samples = []
        self._ticks += 1
        verify = self._ticks % VERIFY_EVERY_TICKS == 0
        for index in list(self._active):
            stats = self.stats[index]
            try:
                reading = self.source.read(index)
            except NotSupported as error:
                logger.error("GPU %s can no longer be read (%s): no longer sampled", self._uuid(index), error)
                self._active.remove(index)
                continue
            except SourceError as error:
                stats.errors += 1
                if not stats.failing:
                    logger.warning("reading GPU %s failed, will retry: %s", self._uuid(index), error)
                stats.failing = True
                continue
            if stats.failing:
                logger.info("GPU %s readable again", self._uuid(index))
                stats.failing = False
            tracker = self.trackers[index]
            sample = tracker.update(reading)
            if verify:
                tracker.verify()
            if sample is None:
                continue
            stats.samples += 1
            samples.append(sample)
        self._emit(samples)
        return samples

    def step(self, slot: int) -> list[Sample]:
        """Slot ``slot`` of the grid (``poll_ns`` apart, slot 0 a tick): a tick, a poll of the
        armed GPUs, or, in the slot just before a tick, a poll of every counter not locked: an
        update that lands right before the tick is then placed between that poll and the tick."""
        phase = slot % self.polls_per_tick
        if phase == 0:
            return self.sample_once()
        return self.poll_once(every=phase == self.polls_per_tick - 1)

    def poll_once(self, every: bool = False) -> list[Sample]:
        """Read the energy counter of every armed GPU (``every``: of every GPU with a counter that
        is not locked); the samples of the changes it placed. A failed read is left to the next
        tick, which logs and counts it."""
        samples = []
        for index in self._active:
            tracker = self.trackers[index]
            if not (tracker.armed or (every and tracker.counting and not tracker.locked)):
                continue
            time_ns = self.clock()
            try:
                raw_j = self.source.read_energy(index)
            except SourceError:
                continue
            self.stats[index].polls += 1
            if raw_j is None:
                continue
            sample = tracker.poll(time_ns, raw_j)
            if sample is not None:
                samples.append(sample)
        self._emit(samples)
        return samples

    def _next_poll(self, slot: int) -> int:
        """The first slot from ``slot`` on with something to read: a tick, a poll while a GPU is
        armed, the pre-tick poll while a counter is not locked."""
        per_tick = self.polls_per_tick
        phase = slot % per_tick
        if phase == 0:
            return slot
        pre_tick = False
        trackers = self.trackers
        for index in self._active:
            tracker = trackers[index]
            if tracker.armed:
                return slot
            pre_tick = pre_tick or (tracker.counting and not tracker.locked)
        return slot + per_tick - 1 - phase if pre_tick else slot + per_tick - phase  # the pre-tick poll, or the tick

    def _emit(self, samples: list[Sample]) -> None:
        if self.sink is None or not samples:
            return
        points = []
        for sample in samples:
            energy, power = self._series[sample.gpu.index]
            if sample.energy_j is not None:
                points.append(energy + (sample.start_time_ns, sample.energy_time_ns, sample.energy_j))
            if sample.power_w is not None:
                points.append(power + (0, sample.time_ns, sample.power_w))
        self.sink.add_points(points)

    def _uuid(self, index: int) -> str:
        return self._attributes[index][semconv.HW_ID]

    # ------------------------------------------------------------------ the steady schedule
    def run(self, wait: Callable[[float], bool] | None = None) -> None:
        """Tick at start + k x interval, poll at the slots start + j x poll between them while a
        GPU is armed, until ``wait(seconds)`` returns True (default: until ``stop()``). ``wait``
        sleeps for the time to the next slot."""
        wait = wait or self._sleep
        per_tick = self.polls_per_tick
        start = self.clock()
        slot = 0
        while True:
            self.step(slot)
            now = self.clock()
            next_slot = (now - start) // self.poll_ns + 1
            self.missed_ticks += (next_slot - 1) // per_tick - slot // per_tick  # ticks that passed meanwhile
            slot = self._next_poll(next_slot)
            if wait((start + slot * self.poll_ns - now) * 1e-9):
                return

    def _sleep(self, seconds: float) -> bool:
        """``time.sleep``, not ``Event.wait``: on a VM a wake-up from a timed ``Event.wait`` costs
        ~85 us of CPU against ~50 us for a sleep, and the thread wakes up to 50 times a second.
        ``stop()`` is therefore seen within one slot (at most ``interval``)."""
        if seconds > 0:
            time.sleep(seconds)
        return self._stop.is_set()

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("sampler already started")
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name="carbonspan-power-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None


def detect_source(clock: Callable[[], int] = time.time_ns) -> PowerSource:
    """NVIDIA (NVML) if it finds GPUs, then AMD (AMD SMI), else SourceError saying what to do."""
    from carbonspan.instrumentation.power.amd import AmdSmiSource
    from carbonspan.instrumentation.power.nvml import NvmlSource

    reasons = []
    for factory in (NvmlSource, AmdSmiSource):
        try:
            source = factory(clock=clock)
        except SourceError as error:
            reasons.append(str(error))
            continue
        if source.gpus():
            return source
        reasons.append(f"{factory.__name__}: no GPU that reports energy or power")
        source.close()
    raise SourceError(
        "no GPU found (" + "; ".join(reasons) + "). To try carbonspan without GPUs, simulate some: "
        "carbonspan sampler --simulate 'H100 SXM x4'"
    )


def default_resource() -> dict[str, AttributeValue]:
    """What the sampler's resource says when neither the caller nor OTEL_RESOURCE_ATTRIBUTES does:
    host.name is what the collector matches a node's GPUs to its workers' spans by."""
    return {semconv.SERVICE_NAME: "carbonspan-sampler", semconv.HOST_NAME: socket.gethostname()}


class RunningSampler:
    """A sampler and its batcher running on their threads; ``stop()`` ends both and sends what is left."""

    def __init__(self, sampler: PowerSampler, batcher) -> None:
        self.sampler = sampler
        self.batcher = batcher

    def stop(self) -> None:
        self.sampler.stop()
        self.batcher.stop(flush=True)
        self.sampler.source.close()


def start_sampler_thread(
    source: PowerSource | None = None,
    *,
    interval_s: float = 0.1,
    export_interval_s: float = 1.0,
    energy_poll_s: float | None = DEFAULT_ENERGY_POLL_S,
    sender=None,
    resource: Mapping[str, AttributeValue] | None = None,
    max_points: int = 200_000,
    clock: Callable[[], int] = time.time_ns,
) -> RunningSampler:
    """Start sampling in this process (e.g. inside a vLLM worker): the GPUs of ``source``
    (default: detected) every ``interval_s`` (energy counters polled every ``energy_poll_s`` between),
    sent every ``export_interval_s`` with ``sender`` (default: OTLP configured from
    ``OTEL_EXPORTER_OTLP_*``, else over ``DEFAULT_PROTOCOL``). ``resource`` is merged with
    ``OTEL_RESOURCE_ATTRIBUTES`` / ``OTEL_SERVICE_NAME`` (explicit values win)."""
    from carbonspan.instrumentation.otlp_push import OtlpMetricsSender, TimestampedMetricBatcher

    source = source or detect_source(clock)
    batcher = TimestampedMetricBatcher(
        resource or {}, SCOPE_NAME, sender or OtlpMetricsSender.from_env(default_protocol=DEFAULT_PROTOCOL),
        max_points, resource_defaults=default_resource(),
    )
    sampler = PowerSampler(source, batcher, interval_s, clock, energy_poll_s)
    batcher.start(export_interval_s)
    sampler.start()
    return RunningSampler(sampler, batcher)
