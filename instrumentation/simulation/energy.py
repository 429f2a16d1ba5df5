"""The simulated fleet's GPUs, read through the real sampler code.

Each node gets the sampler a real node would run (``PowerSampler`` over a ``SimulatedPowerSource``),
whose ``SimulatedGpu``s report what NVML reports (a counter that moves every 100 ms, a power
figure averaged over 1 s) about the power the workers' steps actually drew. The only thing
this module adds is exactness: the GPU's true energy is read off the simulator's power timeline
instead of being integrated numerically from its power function.
"""

from __future__ import annotations

from collections.abc import Callable

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from carbonspan.instrumentation.otlp_push import TimestampedMetricBatcher
from carbonspan.instrumentation.power.sampler import SCOPE_NAME, PowerSampler
from carbonspan.instrumentation.power.simulated import SimulatedGpu, SimulatedPowerSource
from carbonspan.instrumentation.simulation.engine import Worker
from carbonspan.instrumentation.simulation.signals import CapturingSender
from carbonspan.instrumentation.simulation.timeline import PowerTimeline
from carbonspan.processors import semconv

SAMPLER_SERVICE = "carbonspan-sampler"


class SimClock:
    """Simulated time (ns): whatever the driver last set it to."""

    def __init__(self, start_ns: int) -> None:
        self.now_ns = start_ns

    def __call__(self) -> int:
        return self.now_ns


class TimelineGpu(SimulatedGpu):
    """A simulated GPU whose true power is a worker's power timeline."""

    def __init__(self, model: str, uuid: str, timeline: PowerTimeline, *, clock: Callable[[], int],
                 **options) -> None:
        super().__init__(model, uuid, clock=clock, power_fn=timeline.power_at, **options)
        self._timeline = timeline
        self._origin_j = timeline.energy_until(self.origin_ns)

    def energy_since_origin_j(self, t_ns: int) -> float:
        return self._timeline.energy_until(t_ns) - self._origin_j


class NodeSampler:
    """One node's sampler: its GPUs, the real ``PowerSampler``, and the batcher it writes to."""

    def __init__(self, worker: Worker, clock: SimClock, interval_s: float, *, energy_counter: bool = True,
                 counter_update_ns: int = 100_000_000, power_window_ns: int = 1_000_000_000) -> None:
        node = worker.node
        self.gpus = [
            TimelineGpu(node.driver_name, gpu_id, worker.timelines[gpu_id], clock=clock,
                        counter_update_ns=counter_update_ns, power_window_ns=power_window_ns,
                        has_energy_counter=energy_counter)
            for gpu_id in worker.gpu_ids
        ]
        self._capture = CapturingSender()
        resource = {
            semconv.SERVICE_NAME: SAMPLER_SERVICE,
            semconv.SERVICE_INSTANCE_ID: f"{SAMPLER_SERVICE}@{node.host}",
            semconv.HOST_NAME: node.host,
            semconv.CLOUD_PROVIDER: node.provider,
            semconv.CLOUD_REGION: node.region,
        }
        self.batcher = TimestampedMetricBatcher(resource, SCOPE_NAME, self._capture)
        self.sampler = PowerSampler(SimulatedPowerSource(self.gpus, clock), self.batcher, interval_s, clock)

    def sample(self) -> None:
        self.sampler.sample_once()

    def drain(self) -> list[ExportMetricsServiceRequest]:
        self.batcher.flush()
        out, self._capture.requests = self._capture.requests, []
        return out
