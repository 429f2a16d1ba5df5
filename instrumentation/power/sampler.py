"""The sampler: reads every GPU on a steady schedule and hands each reading, with its own
timestamp, to a metric sink (normally ``TimestampedMetricBatcher``, which sends them in batches).

Two ways to drive it. ``sample_once()`` takes one reading of every GPU and returns the samples;
no threads, no sleeping, so a simulation can call it on a simulated clock as fast as it likes.
``start()`` / ``stop()`` run the same step on a thread at fixed ticks (start + k x interval):
the thread sleeps to the next tick rather than for the interval, so it does not drift, and a
tick missed because the machine stalled is skipped, not bunched up.
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


class MetricSink(Protocol):
    """What the sampler writes to; ``TimestampedMetricBatcher`` is one."""

    def add_sum(
        self, name: str, unit: str, attributes: Mapping[str, AttributeValue], start_time_ns: int, time_ns: int,
        value: float, monotonic: bool = True,
    ) -> None: ...

    def add_gauge(
        self, name: str, unit: str, attributes: Mapping[str, AttributeValue], time_ns: int, value: float
    ) -> None: ...


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
    errors: int = 0
    failing: bool = False


class PowerSampler:
    def __init__(
        self,
        source: PowerSource,
        sink: MetricSink | None,
        interval_s: float = 0.1,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self.source = source
        self.sink = sink
        self.interval_ns = round(interval_s * 1e9)
        self.clock = clock
        self.gpus = source.gpus()
        self.trackers = {g.index: EnergyTracker(g) for g in self.gpus}
        self.stats = {g.index: GpuStats() for g in self.gpus}
        self._attributes = {g.index: gpu_attributes(g) for g in self.gpus}
        self._active = [g.index for g in self.gpus]
        self.missed_ticks = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ one step
    def sample_once(self) -> list[Sample]:
        """Read every GPU once; a GPU that fails is logged and skipped, the others are read."""
        samples = []
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
            sample = self.trackers[index].update(reading)
            if sample is None:
                continue
            stats.samples += 1
            samples.append(sample)
            if self.sink is not None:
                self._emit(sample, self._attributes[index])
        return samples

    def _emit(self, sample: Sample, attributes: Mapping[str, AttributeValue]) -> None:
        self.sink.add_sum(
            semconv.HW_ENERGY, semconv.UNIT_JOULE, attributes, sample.start_time_ns, sample.energy_time_ns,
            sample.energy_j,
        )
        if sample.power_w is not None:
            self.sink.add_gauge(semconv.HW_POWER, semconv.UNIT_WATT, attributes, sample.time_ns, sample.power_w)

    def _uuid(self, index: int) -> str:
        return self._attributes[index][semconv.HW_ID]

    # ------------------------------------------------------------------ the steady schedule
    def run(self, wait: Callable[[float], bool] | None = None) -> None:
        """Sample at ticks start + k x interval until ``wait(seconds)`` returns True (default:
        until ``stop()``). ``wait`` sleeps for the time to the next tick."""
        wait = wait or self._stop.wait
        start = self.clock()
        tick = 0
        while True:
            self.sample_once()
            now = self.clock()
            next_tick = (now - start) // self.interval_ns + 1
            if next_tick > tick + 1:
                self.missed_ticks += next_tick - tick - 1
            tick = next_tick
            if wait((start + tick * self.interval_ns - now) * 1e-9):
                return

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
    sender=None,
    resource: Mapping[str, AttributeValue] | None = None,
    max_points: int = 200_000,
    clock: Callable[[], int] = time.time_ns,
) -> RunningSampler:
    """Start sampling in this process (e.g. inside a vLLM worker): the GPUs of ``source``
    (default: detected) every ``interval_s``, sent every ``export_interval_s`` with ``sender``
    (default: OTLP configured from ``OTEL_EXPORTER_OTLP_*``). ``resource`` is merged with
    ``OTEL_RESOURCE_ATTRIBUTES`` / ``OTEL_SERVICE_NAME`` (explicit values win)."""
    from carbonspan.instrumentation.otlp_push import OtlpMetricsSender, TimestampedMetricBatcher

    source = source or detect_source(clock)
    batcher = TimestampedMetricBatcher(
        resource or {}, SCOPE_NAME, sender or OtlpMetricsSender.from_env(), max_points,
        resource_defaults=default_resource(),
    )
    sampler = PowerSampler(source, batcher, interval_s, clock)
    batcher.start(export_interval_s)
    sampler.start()
    return RunningSampler(sampler, batcher)
