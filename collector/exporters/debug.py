"""``debug``: what passes through, human-readable on stderr, as the Collector's debug exporter.

Keys: ``verbosity`` — ``basic`` (default: one line of counts per request), ``normal`` (one line per
span with its carbon total, one per metric) or ``detailed`` (every span with its ids, times and
attributes, ``carbon.*`` first; every metric data point); ``sampling_initial`` (2) and
``sampling_thereafter`` (1): per second, the first requests are written and then every n-th.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from carbonspan.collector.config_values import Section
from carbonspan.collector.exporters._counts import count_metrics, count_points, count_spans, metric_points
from carbonspan.collector.exporters.base import Exporter
from carbonspan.processors import semconv
from carbonspan.processors.otlp import attributes_to_dict

VERBOSITIES = ("basic", "normal", "detailed")
_CARBON = "carbon."


class DebugExporter(Exporter):
    def __init__(self, name: str, config: Mapping[str, Any]) -> None:
        super().__init__(name, config)
        section = Section(config)
        self.verbosity = section.choice("verbosity", VERBOSITIES, "basic")
        self._initial = section.positive_int("sampling_initial", 2)
        self._thereafter = section.positive_int("sampling_thereafter", 1)
        section.check_unknown()
        self._lock = threading.Lock()
        self._window = -1
        self._in_window = 0
        self._written = 0

    def export_traces(self, request: ExportTraceServiceRequest) -> None:
        if not self._sampled():
            return
        lines = [f"{self.name}: traces: {len(request.resource_spans)} resource spans, {count_spans(request)} spans"]
        if self.verbosity != "basic":
            lines += self._trace_lines(request)
        self._write(lines)

    def export_metrics(self, request: ExportMetricsServiceRequest) -> None:
        if not self._sampled():
            return
        lines = [f"{self.name}: metrics: {len(request.resource_metrics)} resource metrics, "
                 f"{count_metrics(request)} metrics, {count_points(request)} data points"]
        if self.verbosity != "basic":
            lines += self._metric_lines(request)
        self._write(lines)

    def shutdown(self, timeout_s: float) -> None:
        sys.stderr.flush()

    def stats(self) -> Mapping[str, int]:
        return {"sent": self._written, "failed": 0, "retried": 0}

    def _sampled(self) -> bool:
        with self._lock:
            second = int(time.monotonic())
            if second != self._window:
                self._window, self._in_window = second, 0
            self._in_window += 1
            beyond = self._in_window - self._initial
            return beyond <= 0 or beyond % self._thereafter == 0

    def _write(self, lines: list[str]) -> None:
        with self._lock:
            sys.stderr.write("\n".join(lines) + "\n")
            sys.stderr.flush()
            self._written += 1

    def _trace_lines(self, request: ExportTraceServiceRequest) -> Iterator[str]:
        detailed = self.verbosity == "detailed"
        for rs in request.resource_spans:
            if detailed:
                yield f"  resource: {_format_attributes(attributes_to_dict(rs.resource.attributes))}"
            for ss in rs.scope_spans:
                if detailed:
                    yield f"  scope: {ss.scope.name} {ss.scope.version}".rstrip()
                for span in ss.spans:
                    yield from _span_lines(span, detailed)

    def _metric_lines(self, request: ExportMetricsServiceRequest) -> Iterator[str]:
        detailed = self.verbosity == "detailed"
        for rm in request.resource_metrics:
            if detailed:
                yield f"  resource: {_format_attributes(attributes_to_dict(rm.resource.attributes))}"
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    kind = metric.WhichOneof("data") or "empty"
                    yield f"  {metric.name} {kind} [{metric.unit}] {metric_points(metric)} points"
                    if detailed:
                        yield from _point_lines(metric, kind)


def _span_lines(span: Span, detailed: bool) -> Iterator[str]:
    attributes = attributes_to_dict(span.attributes)
    duration_ms = (span.end_time_unix_nano - span.start_time_unix_nano) / 1e6
    total = attributes.get(semconv.CARBON_TOTAL_GCO2E)
    carbon = f" {semconv.CARBON_TOTAL_GCO2E}={total}" if total is not None else ""
    yield f"  span {span.name!r} trace={span.trace_id.hex()} span={span.span_id.hex()} {duration_ms:.1f} ms{carbon}"
    if not detailed:
        return
    yield (f"    parent={span.parent_span_id.hex() or '-'} kind={Span.SpanKind.Name(span.kind)} "
           f"start={span.start_time_unix_nano} end={span.end_time_unix_nano} status={span.status.code}")
    ordered = sorted(attributes.items(), key=lambda kv: (not kv[0].startswith(_CARBON), kv[0]))
    for key, value in ordered:
        yield f"    {key}: {value!r}"


def _point_lines(metric: Metric, kind: str) -> Iterator[str]:
    for point in getattr(metric, kind).data_points if kind != "empty" else ():
        attrs = _format_attributes(attributes_to_dict(point.attributes))
        if kind in ("gauge", "sum"):
            value = point.as_double if point.WhichOneof("value") == "as_double" else point.as_int
            yield f"    {point.time_unix_nano} {attrs} value={value}"
        elif kind == "histogram":
            yield (f"    {point.time_unix_nano} {attrs} count={point.count} sum={point.sum} "
                   f"bounds={list(point.explicit_bounds)} counts={list(point.bucket_counts)}")
        else:
            yield f"    {point.time_unix_nano} {attrs} count={point.count} sum={point.sum}"


def _format_attributes(attributes: dict[str, Any]) -> str:
    return "{" + ", ".join(f"{k}={v!r}" for k, v in attributes.items()) + "}"
