"""The metrics the collector itself produces: the carbon outputs (per-request histograms, per-GPU
energy accounts, per-span counters, grid intensity) and its own health (spans in and out, rejects,
queues), built with the OTel SDK and pulled as one OTLP request for the metrics pipelines.

Counters that the pipeline already keeps (router counts, the join's ledger) are observed when
collected rather than mirrored on every change: the hot path only increments ints.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    InMemoryMetricReader,
    Metric,
    MetricsData,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from carbonspan.collector.exporters.base import Exporter
from carbonspan.collector.pipeline import Router
from carbonspan.collector.pipeline_stages import CarbonStage, RollupStage
from carbonspan.processors import semconv as sc
from carbonspan.processors.batched_histograms import BatchedHistograms, HistogramPoint
from carbonspan.processors.rollup import RequestSummary

SERVICE_NAME = "carbonspan-collector"
METER_NAME = "carbonspan.collector"
#: gCO2e per request spans from a few mg (short prompt on an efficient GPU, clean grid) to tens of g.
CO2E_BUCKETS_G = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.5, 5.0, 10.0, 25.0, 50.0)
ENERGY_BUCKETS_J = (1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 25_000, 50_000, 100_000)
_UNIT_REQUEST = "{request}"
#: (name, unit, description, bucket bounds) of the per-request histograms, in ``record_request``'s order
REQUEST_HISTOGRAMS = (
    (sc.METRIC_REQUEST_CO2E, sc.UNIT_GRAM, "CO2e of each request (operational + embodied)", CO2E_BUCKETS_G),
    (sc.METRIC_REQUEST_ENERGY, sc.UNIT_JOULE, "GPU energy of each request", ENERGY_BUCKETS_J),
)


def _histogram(name: str, unit: str, description: str, bounds: tuple, points: list[HistogramPoint],
               now_ns: int) -> Metric:
    """The points as the SDK's data model, for its OTLP encoder."""
    return Metric(name, description, unit, Histogram(
        [HistogramDataPoint(p.attributes, p.start_ns, now_ns, p.count, p.sum, p.bucket_counts, bounds, p.min, p.max)
         for p in points], AggregationTemporality.CUMULATIVE))


def _attrs(pairs: Mapping[str, Any]) -> dict[str, Any]:
    """OTel attributes cannot be None: absent values leave the label out."""
    return {k: v for k, v in pairs.items() if v is not None}


class CollectorMetrics:
    def __init__(self, router: Router, carbon: Sequence[CarbonStage], rollups: Sequence[RollupStage],
                 exporters: Mapping[str, Exporter]) -> None:
        self.router = router
        self.carbon = list(carbon)
        self.rollups = list(rollups)
        self.exporters = dict(exporters)
        self.reader = InMemoryMetricReader()
        self.resource = Resource.create({sc.SERVICE_NAME: SERVICE_NAME})
        self.provider = MeterProvider(metric_readers=[self.reader], resource=self.resource)
        meter = self.provider.get_meter(METER_NAME)
        # The per-request histograms are folded a collection at a time (the SDK records one value per
        # call, ~7 us each: see processors/batched_histograms.py) and added to what the SDK collects.
        self._requests = BatchedHistograms([bounds for *_, bounds in REQUEST_HISTOGRAMS],
                                           (sc.GEN_AI_REQUEST_MODEL, sc.SERVICE_NAME, sc.CARBON_REQUEST_ROUTE),
                                           time.time_ns())
        self._span_energy = meter.create_counter(sc.METRIC_SPAN_ENERGY, unit=sc.UNIT_JOULE,
                                                 description="GPU energy attributed to spans")
        self._span_co2e = meter.create_counter(sc.METRIC_SPAN_CO2E, unit=sc.UNIT_GRAM,
                                               description="CO2e attributed to spans")
        self._span_tokens = meter.create_counter(sc.METRIC_SPAN_TOKENS, unit=sc.UNIT_TOKEN,
                                                 description="tokens of the priced spans")
        gpu = (
            (sc.METRIC_GPU_MEASURED_ENERGY, "measured_j", "energy the GPU's counter measured"),
            (sc.METRIC_GPU_ATTRIBUTED_ENERGY, "attributed_j", "energy attributed to spans"),
            (sc.METRIC_GPU_IDLE_ENERGY, "idle_j", "energy while no request ran"),
        )
        for name, field_name, description in gpu:
            meter.create_observable_counter(name, [self._ledger_callback(field_name)], unit=sc.UNIT_JOULE,
                                            description=description)
        meter.create_observable_gauge(sc.METRIC_GPU_LAST_SAMPLE, [self._observe_last_sample], unit=sc.UNIT_SECOND,
                                      description="unix time of the newest energy sample")
        meter.create_observable_gauge(sc.METRIC_GRID_INTENSITY, [self._observe_grid], unit=sc.UNIT_INTENSITY,
                                      description="grid carbon intensity used for the latest spans")
        own = (
            (sc.METRIC_COLLECTOR_SPANS_RECEIVED, self._observe_received, sc.UNIT_SPAN),
            (sc.METRIC_COLLECTOR_SPANS_EXPORTED, self._observe_exported, sc.UNIT_SPAN),
            (sc.METRIC_COLLECTOR_SPANS_FLAGGED, self._observe_flagged, sc.UNIT_SPAN),
            (sc.METRIC_COLLECTOR_SPANS_LATE, self._observe_late, sc.UNIT_SPAN),
            (sc.METRIC_COLLECTOR_METRIC_POINTS_RECEIVED, self._observe_points, "{point}"),
            (sc.METRIC_COLLECTOR_REJECTED, self._observe_rejected, _UNIT_REQUEST),
        )
        for name, callback, unit in own:
            meter.create_observable_counter(name, [callback], unit=unit)
        meter.create_observable_gauge(sc.METRIC_COLLECTOR_QUEUE_SIZE, [self._observe_queues], unit=_UNIT_REQUEST)
        meter.create_observable_gauge(sc.METRIC_COLLECTOR_SPANS_PENDING, [self._observe_pending], unit=sc.UNIT_SPAN)

    # ------------------------------------------------------------------ recording
    def record_request(self, summary: RequestSummary) -> None:
        self._requests.add((summary.model, summary.service_name, summary.route or None),
                           (summary.total_g, summary.energy_j))

    def collect(self) -> ExportMetricsServiceRequest | None:
        """Everything so far, cumulative, as one OTLP request (None before there is anything)."""
        with self.router.lock:
            for stage in self.carbon:
                for obs in stage.join.span_observations():
                    attrs = _attrs({sc.CARBON_PHASE: obs.phase, sc.HW_MODEL: obs.gpu_model,
                                    sc.CLOUD_REGION: obs.region, sc.SERVICE_NAME: obs.service_name})
                    self._span_energy.add(obs.energy_j, attrs)
                    self._span_co2e.add(obs.co2e_g, attrs)
                    self._span_tokens.add(obs.tokens, attrs)
            data = self.reader.get_metrics_data()
            now_ns = time.time_ns()
            requests = [_histogram(name, unit, description, bounds, points, now_ns) for
                        (name, unit, description, bounds), points in zip(
                            REQUEST_HISTOGRAMS, self._requests.collect(now_ns), strict=True) if points]
        data = self._with_metrics(data, requests)
        return encode_metrics(data) if data is not None else None

    def _with_metrics(self, data: MetricsData | None, metrics: list[Metric]) -> MetricsData | None:
        """What the SDK collected with ``metrics`` added to the collector's scope (None: nothing at all)."""
        rms = list(data.resource_metrics) if data is not None else []
        if not metrics:
            return data if rms else None
        if not rms:
            rms = [ResourceMetrics(self.resource, [], "")]
        scopes = list(rms[0].scope_metrics)
        mine = next((i for i, s in enumerate(scopes) if s.scope.name == METER_NAME), None)
        if mine is None:
            scopes.append(ScopeMetrics(InstrumentationScope(METER_NAME), metrics, ""))
        else:
            scopes[mine] = ScopeMetrics(scopes[mine].scope, [*metrics, *scopes[mine].metrics], scopes[mine].schema_url)
        rms[0] = ResourceMetrics(rms[0].resource, scopes, rms[0].schema_url)
        return MetricsData(rms)

    def shutdown(self) -> None:
        self.provider.shutdown()

    # ------------------------------------------------------------------ observed at collection
    def _ledger_callback(self, field_name: str):
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            for stage in self.carbon:
                for row in stage.join.gpu_ledger():
                    yield Observation(getattr(row, field_name), self._gpu_attrs(row))

        return observe

    @staticmethod
    def _gpu_attrs(row) -> dict[str, Any]:
        return _attrs({sc.HW_ID: row.gpu_id, sc.HW_MODEL: row.model, sc.CLOUD_REGION: row.region})

    def _observe_last_sample(self, options: CallbackOptions) -> Iterable[Observation]:
        for stage in self.carbon:
            for row in stage.join.gpu_ledger():
                if row.last_sample_ns is not None:
                    yield Observation(row.last_sample_ns / 1e9, self._gpu_attrs(row))

    def _observe_grid(self, options: CallbackOptions) -> Iterable[Observation]:
        for stage in self.carbon:
            for row in stage.join.grid_readings():
                yield Observation(row.gco2e_per_kwh, _attrs({
                    sc.CLOUD_REGION: row.region, sc.CARBON_GRID_ZONE: row.zone,
                    sc.CARBON_INTENSITY_SOURCE: row.source, sc.CARBON_INTENSITY_FALLBACK: row.fallback}))

    def _observe_received(self, options: CallbackOptions) -> Iterable[Observation]:
        for receiver, count in self.router.spans_received.items():
            yield Observation(count, {"receiver": receiver})

    def _observe_points(self, options: CallbackOptions) -> Iterable[Observation]:
        for receiver, count in self.router.metric_points_received.items():
            yield Observation(count, {"receiver": receiver})

    def _observe_exported(self, options: CallbackOptions) -> Iterable[Observation]:
        for exporter, count in self.router.spans_exported.items():
            yield Observation(count, {"exporter": exporter})

    def _observe_rejected(self, options: CallbackOptions) -> Iterable[Observation]:
        for (receiver, reason), count in self.router.rejected.items():
            yield Observation(count, {"receiver": receiver, sc.REJECT_REASON: reason})

    def _observe_flagged(self, options: CallbackOptions) -> Iterable[Observation]:
        for stage in self.carbon:
            yield Observation(stage.join.spans_flagged, {"processor": stage.id})

    def _observe_late(self, options: CallbackOptions) -> Iterable[Observation]:
        for stage in self.rollups:
            yield Observation(stage.rollup.late_spans, {"processor": stage.id})

    def _observe_queues(self, options: CallbackOptions) -> Iterable[Observation]:
        for name, exporter in self.exporters.items():
            yield Observation(exporter.queue_size(), {"exporter": name})

    def _observe_pending(self, options: CallbackOptions) -> Iterable[Observation]:
        for pipeline in self.router.pipelines:
            for stage in pipeline.stages:
                if pipeline.signal == "traces":
                    yield Observation(stage.pending_spans, {"processor": stage.id, "pipeline": pipeline.id})
