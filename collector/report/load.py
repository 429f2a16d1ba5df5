"""Reading the OTLP/JSON lines the collector's file exporter writes: one export request a line.

A line is an ``ExportTraceServiceRequest`` (``{"resourceSpans": [...]}``) or an
``ExportMetricsServiceRequest`` (``{"resourceMetrics": [...]}``). A line that is neither, or that
does not decode, is kept as a :class:`BadLine` with its number and reason, so that the report can
say how much of the file it could not read; the other lines are read as usual.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.metrics.v1.metrics_pb2 import ResourceMetrics
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans

from carbonspan.collector import otlp_json

_TRACES_KEY = "resourceSpans"
_METRICS_KEY = "resourceMetrics"


@dataclass(frozen=True)
class BadLine:
    line: int  # 1-based, as editors count
    reason: str


@dataclass
class ReportInput:
    traces: list[ResourceSpans] = field(default_factory=list)
    metrics: list[ResourceMetrics] = field(default_factory=list)
    lines_read: int = 0  # non-blank lines, good and bad
    bad_lines: list[BadLine] = field(default_factory=list)

    @property
    def is_empty(self) -> bool:
        return not self.traces and not self.metrics


def load_file(path: str | Path) -> ReportInput:
    """Every request in the file. Raises OSError when the file cannot be opened."""
    result = ReportInput()
    with Path(path).open(encoding="utf-8", errors="replace") as lines:
        for number, text in enumerate(lines, start=1):
            if not text.strip():
                continue
            result.lines_read += 1
            try:
                _add_line(text, result)
            except ValueError as exc:
                result.bad_lines.append(BadLine(number, str(exc)))
    return result


def _add_line(text: str, into: ReportInput) -> None:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from exc
    if not isinstance(data, dict) or not (_TRACES_KEY in data or _METRICS_KEY in data):
        raise ValueError(f"not an OTLP export request (no {_TRACES_KEY} or {_METRICS_KEY})")
    # Decode both parts before keeping either, so that a bad line adds nothing.
    traces = otlp_json.from_dict({_TRACES_KEY: data.get(_TRACES_KEY) or []}, ExportTraceServiceRequest())
    metrics = otlp_json.from_dict({_METRICS_KEY: data.get(_METRICS_KEY) or []}, ExportMetricsServiceRequest())
    into.traces.extend(traces.resource_spans)
    into.metrics.extend(metrics.resource_metrics)
