"""How many spans or data points an export request holds: what logs, stats and the debug exporter report."""

from __future__ import annotations

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric


def count_spans(request: ExportTraceServiceRequest) -> int:
    return sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)


def metric_points(metric: Metric) -> int:
    kind = metric.WhichOneof("data")
    return len(getattr(metric, kind).data_points) if kind else 0


def count_points(request: ExportMetricsServiceRequest) -> int:
    return sum(metric_points(m) for rm in request.resource_metrics for sm in rm.scope_metrics for m in sm.metrics)


def count_metrics(request: ExportMetricsServiceRequest) -> int:
    return sum(len(sm.metrics) for rm in request.resource_metrics for sm in rm.scope_metrics)
