"""The simulated fleet's GPUs, read through the real sampler code.

Each node gets the sampler a real node would run (``PowerSampler`` over a ``SimulatedPowerSource``),
whose ``SimulatedGpu``s report what NVML reports (a counter that moves every 100 ms, a power
figure averaged over 1 s) about the power the workers' steps actually drew; their true power and
exact energy are read off the workers' power timelines (``power_fn``/``energy_fn``).
"""

from __future__ import annotations

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from carbonspan.instrumentation.otlp_push import TimestampedMetricBatcher
from carbonspan.instrumentation.power.sampler import DEFAULT_ENERGY_POLL_S, SCOPE_NAME, PowerSampler
from carbonspan.instrumentation.power.simulated import SimulatedGpu, SimulatedPowerSource
from carbonspan.instrumentation.simulation.engine import Worker
from carbonspan.instrumentation.simulation.signals import CapturingSender
from carbonspan.processors import semconv

SAMPLER_SERVICE = "carbonspan-sampler"


class SimClock:
    """Simulated time (ns): whatever the driver last set it to."""

    def __init__(self, start_ns: int) -> None:
        self.now_ns = start_ns

    def __call__(self) -> int:
        return self.now_ns


class NodeSampler:
    """One node's sampler: its GPUs, the real ``PowerSampler``, and the batcher it writes to."""

    def __init__(self, worker: Worker, clock: SimClock, interval_s: float, *, energy_counter: bool = True,
                 counter_update_ns: int = 100_000_000, power_window_ns: int = 1_000_000_000,
                 energy_poll_s: float | None = DEFAULT_ENERGY_POLL_S) -> None:
        node = worker.node
        self.gpus = [
            SimulatedGpu(node.driver_name, gpu_id, clock=clock, power_fn=worker.timelines[gpu_id].power_at,
                         energy_fn=worker.timelines[gpu_id].energy_until, counter_update_ns=counter_update_ns,
                         power_window_ns=power_window_ns, has_energy_counter=energy_counter)
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
        self.sampler = PowerSampler(SimulatedPowerSource(self.gpus, clock), self.batcher, interval_s, clock,
                                    energy_poll_s)

    def sample(self, slot: int) -> None:
        """Slot ``slot`` of the sampler's grid (``sampler.poll_ns`` apart): a tick or a poll."""
        self.sampler.step(slot)

    def drain(self) -> list[ExportMetricsServiceRequest]:
        self.batcher.flush()
        out, self._capture.requests = self._capture.requests, []
        return out
