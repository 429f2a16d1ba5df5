"""The join's view of the fleet: each GPU's energy series and each worker's load counters.

Fed from OTLP metrics (``hw.energy`` / ``hw.power`` from samplers, ``carbon.worker.*`` from the
vLLM plugin). A GPU's load is the sum of the counters of every worker whose resource lists the
GPU in ``carbon.gpu.ids``: that is what lets a TP worker's tokens count on each of its GPUs and
several workers sharing one GPU split it.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field

from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AggregationTemporality,
    NumberDataPoint,
    ResourceMetrics,
)

from carbonspan.processors import semconv
from carbonspan.processors.otlp import attributes_to_dict, get_attribute
from carbonspan.processors.series import CumulativeSeries, SeriesKind

#: accepted units and their factor to the base unit (J for energy, W for power).
ENERGY_UNITS = {"J": 1.0, "": 1.0, "mJ": 1e-3, "kJ": 1e3, "Wh": 3600.0, "W.h": 3600.0, "kWh": 3.6e6, "kW.h": 3.6e6}
POWER_UNITS = {"W": 1.0, "": 1.0, "mW": 1e-3, "kW": 1e3}
LOAD_METRICS = (semconv.CARBON_WORKER_TOKENS, semconv.CARBON_WORKER_REQUEST_TIME)


@dataclass
class GpuInfo:
    gpu_id: str
    model: str | None = None
    vendor: str | None = None
    provider: str | None = None
    region: str | None = None
    host: str | None = None
    energy: CumulativeSeries | None = None  # from hw.energy (preferred)
    power: CumulativeSeries | None = None  # from hw.power, integrated

    @property
    def series(self) -> CumulativeSeries | None:
        """The energy curve the join uses: the hardware counter where there is one."""
        if self.energy is not None and len(self.energy):
            return self.energy
        if self.power is not None and len(self.power):
            return self.power
        return None


@dataclass
class WorkerLoad:
    worker_key: str
    gpu_ids: tuple[str, ...]
    counters: dict[tuple[str, str], CumulativeSeries] = field(default_factory=dict)  # (metric, phase)

    def series_for(self, metric: str, phase: str | None = None) -> list[CumulativeSeries]:
        return [s for (m, p), s in self.counters.items() if m == metric and (phase is None or p == phase)]


@dataclass
class IngestStats:
    points: int = 0
    rejected: int = 0
    errors: list[str] = field(default_factory=list)

    def reject(self, message: str) -> None:
        self.rejected += 1
        if len(self.errors) < 20:  # enough to diagnose, bounded for a flood of bad points
            self.errors.append(message)


def worker_key(resource: dict) -> str:
    """Identity of a worker process: its service.instance.id, else host and service name."""
    instance = resource.get(semconv.SERVICE_INSTANCE_ID)
    if instance:
        return str(instance)
    return f"{resource.get(semconv.HOST_NAME, '')}/{resource.get(semconv.SERVICE_NAME, '')}"


def _point_value(point: NumberDataPoint) -> float:
    return float(point.as_double) if point.WhichOneof("value") == "as_double" else float(point.as_int)


class Telemetry:
    def __init__(self, retention_ns: int) -> None:
        self.retention_ns = retention_ns
        self.gpus: dict[str, GpuInfo] = {}
        self.workers: dict[str, WorkerLoad] = {}
        self._workers_by_gpu: dict[str, list[WorkerLoad]] = {}

    # ------------------------------------------------------------------ ingest
    def add(self, resource_metrics: Iterable[ResourceMetrics]) -> IngestStats:
        stats = IngestStats()
        for rm in resource_metrics:
            resource = attributes_to_dict(rm.resource.attributes)
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name == semconv.HW_ENERGY:
                        self._add_energy(metric, resource, stats)
                    elif metric.name == semconv.HW_POWER:
                        self._add_power(metric, resource, stats)
                    elif metric.name in LOAD_METRICS:
                        self._add_load(metric, resource, stats)
        return stats

    def _gpu(self, point: NumberDataPoint, resource: dict, stats: IngestStats) -> GpuInfo | None:
        gpu_id = get_attribute(point.attributes, semconv.HW_ID)
        if not gpu_id:
            stats.reject(f"data point without {semconv.HW_ID}")
            return None
        info = self.gpus.get(gpu_id)
        if info is None:
            info = self.gpus[gpu_id] = GpuInfo(gpu_id=str(gpu_id))
        model = get_attribute(point.attributes, semconv.HW_MODEL)
        if model:
            info.model = str(model)
        vendor = get_attribute(point.attributes, semconv.HW_VENDOR)
        if vendor:
            info.vendor = str(vendor)
        info.provider = resource.get(semconv.CLOUD_PROVIDER, info.provider)
        info.region = resource.get(semconv.CLOUD_REGION, info.region)
        info.host = resource.get(semconv.HOST_NAME, info.host)
        return info

    def _add_energy(self, metric, resource: dict, stats: IngestStats) -> None:
        if metric.WhichOneof("data") != "sum":
            stats.reject(f"{metric.name} must be a Sum, got {metric.WhichOneof('data')}")
            return
        if metric.sum.aggregation_temporality != AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE:
            stats.reject(f"{metric.name} must be cumulative")
            return
        factor = ENERGY_UNITS.get(metric.unit)
        if factor is None:
            stats.reject(f"{metric.name}: unknown unit {metric.unit!r}")
            return
        for point in metric.sum.data_points:
            info = self._gpu(point, resource, stats)
            if info is None:
                continue
            if info.energy is None:
                info.energy = CumulativeSeries(SeriesKind.COUNTER, self.retention_ns)
            self._ingest(info.energy, point, factor, stats)

    def _add_power(self, metric, resource: dict, stats: IngestStats) -> None:
        kind = metric.WhichOneof("data")
        if kind not in ("gauge", "sum"):
            stats.reject(f"{metric.name} must be a Gauge, got {kind}")
            return
        factor = POWER_UNITS.get(metric.unit)
        if factor is None:
            stats.reject(f"{metric.name}: unknown unit {metric.unit!r}")
            return
        for point in getattr(metric, kind).data_points:
            info = self._gpu(point, resource, stats)
            if info is None:
                continue
            if info.power is None:
                info.power = CumulativeSeries(SeriesKind.POWER, self.retention_ns)
            self._ingest(info.power, point, factor, stats)

    def _add_load(self, metric, resource: dict, stats: IngestStats) -> None:
        if metric.WhichOneof("data") != "sum" or (
            metric.sum.aggregation_temporality != AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
        ):
            stats.reject(f"{metric.name} must be a cumulative Sum")
            return
        gpu_ids = resource.get(semconv.CARBON_GPU_IDS)
        if not gpu_ids:
            stats.reject(f"{metric.name} from a resource without {semconv.CARBON_GPU_IDS}")
            return
        worker = self._worker(worker_key(resource), tuple(str(g) for g in gpu_ids))
        for point in metric.sum.data_points:
            phase = str(get_attribute(point.attributes, semconv.CARBON_PHASE, ""))
            series = worker.counters.get((metric.name, phase))
            if series is None:
                series = worker.counters[(metric.name, phase)] = CumulativeSeries(
                    SeriesKind.COUNTER, self.retention_ns
                )
            self._ingest(series, point, 1.0, stats)

    @staticmethod
    def _ingest(series: CumulativeSeries, point: NumberDataPoint, factor: float, stats: IngestStats) -> None:
        if point.time_unix_nano == 0:
            stats.reject("data point without time_unix_nano")
            return
        result = series.add(point.time_unix_nano, _point_value(point) * factor, point.start_time_unix_nano)
        if result.accepted:
            stats.points += 1
        else:
            stats.reject(result.reason)

    def _worker(self, key: str, gpu_ids: tuple[str, ...]) -> WorkerLoad:
        worker = self.workers.get(key)
        if worker is not None and worker.gpu_ids == gpu_ids:
            return worker
        if worker is not None:  # the worker was restarted on other GPUs: re-index it
            for gpu in worker.gpu_ids:
                self._workers_by_gpu[gpu].remove(worker)
            worker.gpu_ids = gpu_ids
        else:
            worker = self.workers[key] = WorkerLoad(key, gpu_ids)
        for gpu in gpu_ids:
            self._workers_by_gpu.setdefault(gpu, []).append(worker)
        return worker

    # ------------------------------------------------------------------ queries
    def load_series(self, gpu_id: str, metric: str, phase: str | None = None) -> list[CumulativeSeries]:
        """Every counter of ``metric`` (of one phase, or all; all workers) that counts work on the GPU."""
        return [s for w in self._workers_by_gpu.get(gpu_id, ()) for s in w.series_for(metric, phase)]

    def load_at(self, gpu_id: str, metric: str, times_ns: list[int], phase: str | None = None) -> list[float] | None:
        """Total work done on the GPU up to each time (in one phase, or all); None when no worker
        reports for it."""
        series = self.load_series(gpu_id, metric, phase)
        if not series:
            return None
        total = series[0].values_at(times_ns)
        for s in series[1:]:
            total = [x + y for x, y in zip(total, s.values_at(times_ns), strict=True)]
        return total

    def phase_token_rates(self, gpu_id: str, phase: str, times_ns: list[int]) -> list[float] | None:
        """Between consecutive times, the tokens one running request of the phase made per second
        on the GPU (phase tokens / phase request-seconds, all workers); None where the workers do
        not report the phase."""
        tokens = self.load_at(gpu_id, semconv.CARBON_WORKER_TOKENS, times_ns, phase)
        seconds = self.load_at(gpu_id, semconv.CARBON_WORKER_REQUEST_TIME, times_ns, phase)
        if tokens is None or seconds is None:
            return None
        return [(tokens[i + 1] - tokens[i]) / (seconds[i + 1] - seconds[i])
                if seconds[i + 1] > seconds[i] else 0.0 for i in range(len(times_ns) - 1)]

    def load_breakpoints(self, gpu_id: str, metric: str, lo_ns: int, hi_ns: int) -> list[int]:
        """Times of the GPU's load points strictly inside (lo, hi), from all its workers."""
        times: set[int] = set()
        for series in self.load_series(gpu_id, metric):
            points, _ = series.points()
            times.update(points[bisect.bisect_right(points, lo_ns) : bisect.bisect_left(points, hi_ns)])
        return sorted(times)

    def load_newest_ns(self, gpu_id: str, metric: str) -> int | None:
        """How far the GPU's load data reaches: the least advanced of its workers.

        A worker is as current as its newest point of any phase: a series that did not move is
        one the worker did no work in (a prefill worker's decode counter), not one that is late.
        """
        newest = []
        for worker in self._workers_by_gpu.get(gpu_id, ()):
            times = [s.newest_ns for s in worker.series_for(metric) if s.newest_ns is not None]
            if times:
                newest.append(max(times))
        return min(newest) if newest else None
