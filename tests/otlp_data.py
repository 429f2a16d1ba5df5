"""Builders of real OTLP protobuf messages for tests: what samplers and workers put on the wire."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AggregationTemporality,
    Gauge,
    Metric,
    NumberDataPoint,
    ResourceMetrics,
    Sum,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span

from carbonspan.processors import semconv
from carbonspan.processors.otlp import set_attributes

SECOND = 1_000_000_000
T0 = 1_700_000_000 * SECOND  # a fixed epoch keeps every test deterministic


def resource(attributes: Mapping) -> Resource:
    res = Resource()
    set_attributes(res.attributes, attributes)
    return res


def node_resource(gpu_ids: Sequence[str], *, service: str = "decode", instance: str = "worker-1",
                  provider: str = "aws", region: str = "us-east-1", **extra) -> dict:
    return {
        semconv.SERVICE_NAME: service,
        semconv.SERVICE_INSTANCE_ID: instance,
        semconv.HOST_NAME: f"host-{instance}",
        semconv.CLOUD_PROVIDER: provider,
        semconv.CLOUD_REGION: region,
        semconv.CARBON_GPU_IDS: list(gpu_ids),
        **extra,
    }


def _points(samples: Iterable[tuple[int, float]], attributes: Mapping, start_ns: int) -> list[NumberDataPoint]:
    points = []
    for t, value in samples:
        point = NumberDataPoint(time_unix_nano=t, start_time_unix_nano=start_ns, as_double=value)
        set_attributes(point.attributes, attributes)
        points.append(point)
    return points


def energy_metrics(gpu_id: str, samples: Iterable[tuple[int, float]], *, model: str = "NVIDIA H100 80GB HBM3",
                   start_ns: int = T0 - 3600 * SECOND, unit: str = semconv.UNIT_JOULE,
                   res: Mapping | None = None) -> ResourceMetrics:
    attrs = {semconv.HW_ID: gpu_id, semconv.HW_TYPE: semconv.HW_TYPE_GPU, semconv.HW_MODEL: model,
             semconv.HW_VENDOR: "nvidia"}
    metric = Metric(name=semconv.HW_ENERGY, unit=unit, sum=Sum(
        aggregation_temporality=AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE, is_monotonic=True,
        data_points=_points(samples, attrs, start_ns)))
    return _wrap_metric(metric, res or {semconv.HOST_NAME: "host-1", semconv.CLOUD_REGION: "us-east-1"})


def power_metrics(gpu_id: str, samples: Iterable[tuple[int, float]], *, model: str = "NVIDIA H100 80GB HBM3",
                  res: Mapping | None = None) -> ResourceMetrics:
    attrs = {semconv.HW_ID: gpu_id, semconv.HW_TYPE: semconv.HW_TYPE_GPU, semconv.HW_MODEL: model}
    metric = Metric(name=semconv.HW_POWER, unit=semconv.UNIT_WATT,
                    gauge=Gauge(data_points=_points(samples, attrs, 0)))
    return _wrap_metric(metric, res or {semconv.HOST_NAME: "host-1"})


def load_metrics(worker_res: Mapping, samples: Iterable[tuple[int, float]], *, phase: str = semconv.PHASE_PREFILL,
                 metric_name: str = semconv.CARBON_WORKER_TOKENS, start_ns: int = T0 - 3600 * SECOND
                 ) -> ResourceMetrics:
    metric = Metric(name=metric_name, unit=semconv.UNIT_TOKEN, sum=Sum(
        aggregation_temporality=AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE, is_monotonic=True,
        data_points=_points(samples, {semconv.CARBON_PHASE: phase}, start_ns)))
    return _wrap_metric(metric, worker_res)


def _wrap_metric(metric: Metric, res: Mapping) -> ResourceMetrics:
    rm = ResourceMetrics(resource=resource(res))
    rm.scope_metrics.add(scope=InstrumentationScope(name="tests")).metrics.append(metric)
    return rm


@dataclass
class SpanSpec:
    phase: str | None
    start_ns: int
    end_ns: int
    tokens: float | None = None
    trace_id: bytes = field(default_factory=lambda: os.urandom(16))
    span_id: bytes = field(default_factory=lambda: os.urandom(8))
    parent_span_id: bytes = b""
    name: str | None = None
    attributes: dict = field(default_factory=dict)


def spans(res: Mapping, specs: Iterable[SpanSpec]) -> ResourceSpans:
    rs = ResourceSpans(resource=resource(res))
    scope = rs.scope_spans.add(scope=InstrumentationScope(name="tests"))
    for spec in specs:
        span = Span(trace_id=spec.trace_id, span_id=spec.span_id, parent_span_id=spec.parent_span_id,
                    name=spec.name or spec.phase or "request", start_time_unix_nano=spec.start_ns,
                    end_time_unix_nano=spec.end_ns, kind=Span.SPAN_KIND_INTERNAL)
        attrs = dict(spec.attributes)
        if spec.phase:
            attrs[semconv.CARBON_PHASE] = spec.phase
            attrs.setdefault(semconv.GEN_AI_REQUEST_MODEL, "tiny-llama")
        if spec.tokens is not None:
            attrs[semconv.CARBON_TOKENS] = spec.tokens
        set_attributes(span.attributes, attrs)
        scope.spans.append(span)
    return rs


def ramp(start_ns: int, end_ns: int, step_ns: int, rate_per_s: float, base: float = 0.0) -> list[tuple[int, float]]:
    """Samples of a counter growing at a constant rate: (t, base + rate * (t - start))."""
    return [(t, base + rate_per_s * (t - start_ns) / SECOND) for t in range(start_ns, end_ns + 1, step_ns)]


def all_spans(resource_spans: Iterable[ResourceSpans]) -> list[tuple[dict, Span]]:
    from carbonspan.processors.otlp import attributes_to_dict

    return [(attributes_to_dict(rs.resource.attributes), span)
            for rs in resource_spans for ss in rs.scope_spans for span in ss.spans]
