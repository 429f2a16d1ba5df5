"""Drive the simulated fleet and hand what it emits, batch by batch, to a sink.

One batch per export interval (1 s by default), as the real agents send: the spans that ended in
it (one ``ExportTraceServiceRequest``), and the workers' load counters and the samplers' energy
readings (``ExportMetricsServiceRequest``s, every point with its own timestamp). Simulated time
starts at wall-clock now unless told otherwise, so a live collector's deadlines and retention make
sense; ``run(speed=1.0)`` paces batches in real time, a larger speed accelerates, None does not wait.

Arrivals stop after ``duration_s`` (or ``requests``); the replay then runs until every request has
finished, plus a tail that lets the energy and load data cover the last spans' ends.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import grpc
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2_grpc import MetricsServiceStub
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceStub

from carbonspan.instrumentation.power.sampler import DEFAULT_ENERGY_POLL_S
from carbonspan.instrumentation.simulation.energy import NodeSampler, SimClock
from carbonspan.instrumentation.simulation.engine import FleetSimulation, SimRequest
from carbonspan.instrumentation.simulation.fleet import FleetSpec, default_fleet
from carbonspan.instrumentation.simulation.signals import LoadSignals, SpanSignals
from carbonspan.instrumentation.simulation.workload import WorkloadSpec

NS = 1_000_000_000


@dataclass(frozen=True)
class ReplaySettings:
    duration_s: float | None = 60.0  # arrivals stop after this much simulated time
    requests: int | None = None  # or after this many requests
    seed: int = 0
    sample_interval_s: float = 0.1
    export_interval_s: float = 1.0
    #: False: the GPUs report power only (1-s averages), which the sampler integrates.
    energy_counter: bool = True
    counter_update_ns: int = 100_000_000
    power_window_ns: int = 1_000_000_000
    #: the samplers' ticks are this far after the counters' updates: a sampler is not in phase with the driver.
    sampler_phase_ns: int = 37_000_000
    #: the samplers' energy polls between ticks (None: counters read at the ticks only).
    energy_poll_s: float | None = DEFAULT_ENERGY_POLL_S
    heartbeat_ns: int = 100_000_000
    tail_s: float = 2.0

    def __post_init__(self) -> None:
        if self.duration_s is None and self.requests is None:
            raise ValueError("give duration_s or requests (or both)")
        if self.sample_interval_s <= 0 or self.export_interval_s <= 0:
            raise ValueError("sample and export intervals must be > 0")
        if self.energy_poll_s is not None and self.energy_poll_s <= 0:
            raise ValueError("energy_poll_s must be > 0 (or None)")


@dataclass
class Batch:
    time_ns: int  # simulated time the batch covers up to
    traces: ExportTraceServiceRequest | None
    metrics: list[ExportMetricsServiceRequest]
    finished: list[SimRequest] = field(default_factory=list)  # with their ground truth


Sink = Callable[[Batch], None]


class Replay:
    def __init__(self, fleet: FleetSpec | None = None, workload: WorkloadSpec | None = None,
                 settings: ReplaySettings | None = None, *, start_ns: int | None = None) -> None:
        self.fleet = fleet or default_fleet()
        self.workload = workload or WorkloadSpec()
        self.settings = s = settings or ReplaySettings()
        self.start_ns = time.time_ns() if start_ns is None else start_ns
        self.clock = SimClock(self.start_ns)
        until = None if s.duration_s is None else self.start_ns + round(s.duration_s * NS)
        self.sim = FleetSimulation(self.fleet, self.workload, start_ns=self.start_ns, seed=s.seed,
                                   max_requests=s.requests, arrivals_until_ns=until, heartbeat_ns=s.heartbeat_ns)
        self.spans = SpanSignals(self.sim, s.seed)
        self.load = LoadSignals(self.sim.workers.values(), self.start_ns)
        self.samplers = [
            NodeSampler(worker, self.clock, s.sample_interval_s, energy_counter=s.energy_counter,
                        counter_update_ns=s.counter_update_ns, power_window_ns=s.power_window_ns,
                        energy_poll_s=s.energy_poll_s)
            for worker in self.sim.workers.values()
        ]

    def batches(self) -> Iterator[Batch]:
        s = self.settings
        interval, export = round(s.sample_interval_s * NS), round(s.export_interval_s * NS)
        slot_ns = self.samplers[0].sampler.poll_ns if self.samplers else interval  # one grid for all nodes
        first = self.start_ns + s.sampler_phase_ns % interval
        slot = 0
        now = self.start_ns
        end_ns = None
        while end_ns is None or now < end_ns:
            now += export
            while first + slot * slot_ns <= now:
                self._advance(first + slot * slot_ns)
                for sampler in self.samplers:
                    sampler.sample(slot)
                slot += 1
            self._advance(now)
            yield self._collect(now)
            if end_ns is None and self.sim.done:
                end_ns = now + round(s.tail_s * NS)
            self._forget(now)

    def run(self, sink: Sink, *, speed: float | None = None, sleep: Callable[[float], None] = time.sleep) -> int:
        """Send every batch to ``sink``; paced at ``speed`` x real time (None: as fast as possible).
        Returns the number of requests that finished."""
        wall_start = time.monotonic()
        finished = 0
        for batch in self.batches():
            if speed:
                ahead = (batch.time_ns - self.start_ns) / NS / speed - (time.monotonic() - wall_start)
                if ahead > 0:
                    sleep(ahead)
            sink(batch)
            finished += len(batch.finished)
        return finished

    def _advance(self, t: int) -> None:
        self.sim.advance_to(t)
        self.clock.now_ns = t

    def _collect(self, now: int) -> Batch:
        for request in self.sim.drain_arrived():
            self.spans.request_arrived(request)
        for request, record in self.sim.drain_phases():
            self.spans.phase_ended(request, record)
        finished = self.sim.drain_finished()
        for request in finished:
            self.spans.request_finished(request)
        metrics = self.load.drain()
        for sampler in self.samplers:
            metrics += sampler.drain()
        return Batch(now, self.spans.drain(), metrics, finished)

    def _forget(self, now: int) -> None:
        """Power history older than any reading can ask for is dropped: long demos stay small."""
        keep_from = now - 2 * max(self.settings.power_window_ns, self.settings.counter_update_ns) - 2 * NS
        for worker in self.sim.workers.values():
            for timeline in worker.timelines.values():
                timeline.forget_before(keep_from)


class OtlpGrpcSink:
    """Sends each batch to an OTLP/gRPC receiver (a carbonspan collector, an OpenTelemetry
    Collector ...) at ``host:port``: metrics first, so spans find their energy data there."""

    def __init__(self, endpoint: str, timeout_s: float = 10.0) -> None:
        self._channel = grpc.insecure_channel(endpoint.removeprefix("http://"))
        self._traces = TraceServiceStub(self._channel)
        self._metrics = MetricsServiceStub(self._channel)
        self._timeout_s = timeout_s

    def __call__(self, batch: Batch) -> None:
        for request in batch.metrics:
            self._metrics.Export(request, timeout=self._timeout_s)
        if batch.traces is not None:
            self._traces.Export(batch.traces, timeout=self._timeout_s)

    def close(self) -> None:
        self._channel.close()
