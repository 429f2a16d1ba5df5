"""Pipelines and the router that feeds them: receivers hand over whole requests, the ticker
releases what the processors held back, exporters get what comes out.

One lock guards every stage: the join is shared by a traces and a metrics pipeline and is not
thread-safe, and receivers call in from gRPC and HTTP threads. Exporters are called under it too,
which is fine because the Exporter contract says ``export_*`` only enqueues.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.metrics.v1.metrics_pb2 import ResourceMetrics
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans

from carbonspan.collector.exporters.base import Exporter
from carbonspan.collector.pipeline_settings import MemoryLimiterSettings
from carbonspan.collector.pipeline_stages import Stage, point_count, span_count

log = logging.getLogger("carbonspan.collector.pipeline")

REASON_MALFORMED = "malformed"
REASON_TOO_LARGE = "too_large"
REASON_UNAUTHENTICATED = "unauthenticated"
REASON_MEMORY_LIMIT = "memory_limit"
REASON_UNSUPPORTED = "unsupported_media_type"


class Rejected(Exception):
    """A request the collector refuses, and why; receivers map ``reason`` to a gRPC/HTTP status."""

    def __init__(self, reason: str, message: str, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.retry_after_s = retry_after_s


@dataclass
class Pipeline:
    id: str
    signal: str
    receivers: tuple[str, ...]
    stages: list[Stage]
    exporters: list[Exporter]
    limiter: MemoryLimiterSettings | None = None

    def push(self, batch: list, now_ns: int) -> list:
        for stage in self.stages:
            if not batch:
                return []
            batch = stage.traces(batch, now_ns) if self.signal == "traces" else stage.metrics(batch, now_ns)
        return batch

    def release(self, now_ns: int, flush: bool) -> list:
        carry: list = []
        for stage in self.stages:
            if self.signal == "traces":
                carry = (stage.traces(carry, now_ns) if carry else []) + stage.release_traces(now_ns, flush)
            else:
                carry = (stage.metrics(carry, now_ns) if carry else []) + stage.release_metrics(now_ns, flush)
        return carry

    @property
    def held_spans(self) -> int:
        return sum(stage.pending_spans for stage in self.stages) if self.signal == "traces" else 0


class Router:
    def __init__(self, pipelines: Sequence[Pipeline], clock: Callable[[], int]) -> None:
        self.pipelines = list(pipelines)
        self.clock = clock
        self.lock = threading.RLock()
        self.spans_received: Counter[str] = Counter()  # by receiver
        self.metric_points_received: Counter[str] = Counter()
        self.spans_exported: Counter[str] = Counter()  # by exporter
        self.export_errors: Counter[str] = Counter()
        self.rejected: Counter[tuple[str, str]] = Counter()  # (receiver, reason)
        self._bytes_per_span = 1024.0  # running estimate, for limit_mib

    # ------------------------------------------------------------------ from receivers
    def reject(self, receiver_id: str, rejected: Rejected) -> None:
        with self.lock:
            self.rejected[(receiver_id, rejected.reason)] += 1
        log.warning("rejected request", extra={"receiver": receiver_id, "reason": rejected.reason,
                                               "detail": rejected.message})

    def receive_traces(self, receiver_id: str, request: ExportTraceServiceRequest) -> None:
        """Push the request's spans through every traces pipeline the receiver feeds, or raise
        Rejected (memory limit) having taken none of them."""
        targets = [p for p in self.pipelines if p.signal == "traces" and receiver_id in p.receivers]
        count = span_count(list(request.resource_spans))
        with self.lock:
            for pipeline in targets:
                self._admit(pipeline)
            if count and any(p.limiter is not None and p.limiter.limit_bytes is not None for p in targets):
                # the size walks every span: only for a limit in bytes
                self._bytes_per_span = 0.9 * self._bytes_per_span + 0.1 * (request.ByteSize() / count)
            self.spans_received[receiver_id] += count
            now = self.clock()
            batches = [_copy(request.resource_spans, ResourceSpans, i) for i in range(len(targets))]
            for pipeline, batch in zip(targets, batches, strict=True):
                self._export(pipeline, pipeline.push(batch, now))

    def receive_metrics(self, receiver_id: str, request: ExportMetricsServiceRequest) -> None:
        targets = [p for p in self.pipelines if p.signal == "metrics" and receiver_id in p.receivers]
        with self.lock:
            self.metric_points_received[receiver_id] += point_count(list(request.resource_metrics))
            now = self.clock()
            batches = [_copy(request.resource_metrics, ResourceMetrics, i) for i in range(len(targets))]
            for pipeline, batch in zip(targets, batches, strict=True):
                self._export(pipeline, pipeline.push(batch, now))

    def _admit(self, pipeline: Pipeline) -> None:
        limiter = pipeline.limiter
        if limiter is None:
            return
        held = pipeline.held_spans
        over = (limiter.limit_spans is not None and held >= limiter.limit_spans) or (
            limiter.limit_bytes is not None and held * self._bytes_per_span >= limiter.limit_bytes)
        if over:
            raise Rejected(REASON_MEMORY_LIMIT,
                           f"pipeline {pipeline.id} holds {held} spans, over its memory_limiter budget; "
                           f"retry after {limiter.retry_after_s}s", retry_after_s=limiter.retry_after_s)

    # ------------------------------------------------------------------ from the ticker
    def tick(self, flush: bool = False) -> None:
        """Release what the processors held back; with ``flush``, everything."""
        with self.lock:
            now = self.clock()
            # traces first: a flush of the join books the energy the metrics then report
            for pipeline in sorted(self.pipelines, key=lambda p: p.signal != "traces"):
                self._export(pipeline, pipeline.release(now, flush))

    def export_metrics_everywhere(self, request: ExportMetricsServiceRequest) -> None:
        """The collector's own metrics (carbon outputs, self-metrics): to every metrics pipeline's exporters."""
        with self.lock:
            seen: set[int] = set()
            for pipeline in self.pipelines:
                if pipeline.signal != "metrics":
                    continue
                for exporter in pipeline.exporters:
                    if id(exporter) not in seen:
                        seen.add(id(exporter))
                        self._call(exporter, exporter.export_metrics, request)

    def held_spans(self) -> int:
        with self.lock:
            return sum(p.held_spans for p in self.pipelines)

    # ------------------------------------------------------------------ to exporters
    def _export(self, pipeline: Pipeline, batch: list) -> None:
        if not batch:
            return
        if pipeline.signal == "traces":
            count = span_count(batch)
            request = None  # copied into one request only for the exporters that want the message
            for exporter in pipeline.exporters:
                if exporter.takes_trace_batches:
                    sent = self._call(exporter, exporter.export_trace_batch, batch, count)
                else:
                    if request is None:
                        request = ExportTraceServiceRequest(resource_spans=batch)
                    sent = self._call(exporter, exporter.export_traces, request)
                if sent:
                    self.spans_exported[exporter.name] += count
        else:
            request = ExportMetricsServiceRequest(resource_metrics=batch)
            for exporter in pipeline.exporters:
                self._call(exporter, exporter.export_metrics, request)

    def _call(self, exporter: Exporter, method: Callable, *args) -> bool:
        try:
            method(*args)
            return True
        except Exception:  # an exporter's bug must not stop the pipeline or the other exporters
            self.export_errors[exporter.name] += 1
            log.exception("exporter failed", extra={"exporter": exporter.name})
            return False


def _copy(items, cls, index: int) -> list:
    """The first pipeline takes the received messages; each further one a copy, as processors
    change them in place (attributes written, held spans taken out): all copies are made before
    the first pipeline runs."""
    if index == 0:
        return list(items)
    out = []
    for item in items:
        copy = cls()
        copy.CopyFrom(item)
        out.append(copy)
    return out
