"""Per-engine instrumentation: phase spans of finished requests and the worker load counters.

Both are fed from vLLM's frontend process, where vLLM already gathers what they need: the
request timestamps of each finished request (captured by the ``do_tracing`` hook installed by
the plugin) and the per-step batch composition (``SchedulerStats.iteration_details``, handed to
stat loggers every step). The engine's thread only does bookkeeping (a few microseconds a step);
a background thread, once a second, makes the spans (through the OTel SDK: batch span
processor, OTLP exporter configured by the usual OTEL_EXPORTER_OTLP_* variables) and sends the
load points with their own timestamps through ``TimestampedMetricBatcher``, with a heartbeat
point while the engine is idle.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections.abc import Mapping
from typing import Any

from opentelemetry import propagate
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from carbonspan.instrumentation.otlp_push import (
    ConsoleMetricsSender,
    OtlpMetricsSender,
    TimestampedMetricBatcher,
)
from carbonspan.instrumentation.vllm.clock import ClockAlignment, process_alignment
from carbonspan.instrumentation.vllm.resource import worker_resource
from carbonspan.instrumentation.vllm.timeline import (
    FinishedRequest,
    LoadPoint,
    StepLoad,
    WorkerLoad,
    phase_windows,
)
from carbonspan.processors import semconv

logger = logging.getLogger(__name__)

ENV_ENABLE = "CARBONSPAN_VLLM"
SCOPE = "carbonspan.instrumentation.vllm"
_PHASE_ATTRIBUTES = {phase: {semconv.CARBON_PHASE: phase} for phase in semconv.COMPUTE_PHASES}
_UNITS = {semconv.CARBON_WORKER_TOKENS: semconv.UNIT_TOKEN, semconv.CARBON_WORKER_REQUEST_TIME: semconv.UNIT_SECOND}


def enabled() -> bool:
    return os.environ.get(ENV_ENABLE, "").strip().lower() in ("1", "true", "yes", "on")


def default_span_exporter() -> SpanExporter:
    protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
    if (protocol or "grpc").strip() == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

        return HttpExporter()
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


class EngineInstrumentation:
    """Spans and load counters of one engine, under one resource."""

    def __init__(
        self,
        model: str,
        role: str,
        *,
        span_exporter: SpanExporter | None = None,
        metrics_sender: OtlpMetricsSender | ConsoleMetricsSender | Any | None = None,
        clock: ClockAlignment | None = None,
        heartbeat_s: float = 1.0,
        instance_id: str | None = None,
    ) -> None:
        self.model = model
        self.role = role
        self.clock = clock or process_alignment()
        self.resource_attributes = worker_resource(role, instance_id)
        self.tracer_provider = TracerProvider(resource=Resource(self.resource_attributes))
        self.tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter or default_span_exporter()))
        self._tracer = self.tracer_provider.get_tracer(SCOPE)
        self.batcher = TimestampedMetricBatcher(self.resource_attributes, SCOPE,
                                                metrics_sender or OtlpMetricsSender.from_env())
        self.load = WorkerLoad(time.time_ns())
        self._lock = threading.Lock()
        self._heartbeat_ns = int(heartbeat_s * 1e9)
        self._stop = threading.Event()
        self._pending: list[LoadPoint] = self.load.initial()
        self._finished: list[tuple[FinishedRequest, Mapping[str, str] | None]] = []
        self._thread = threading.Thread(target=self._run, name="carbonspan-vllm-load", daemon=True)
        self._thread.start()
        atexit.register(self.shutdown)

    # ---------------------------------------------------------------- spans
    def on_finished(self, request: FinishedRequest, trace_headers: Mapping[str, str] | None) -> None:
        """On the engine's thread: queue only. The spans carry explicit start and end times, so
        the background thread can make them a moment later without changing them."""
        with self._lock:
            self._finished.append((request, trace_headers))

    def _emit(self, request: FinishedRequest, trace_headers: Mapping[str, str] | None) -> None:
        parent = propagate.extract(dict(trace_headers)) if trace_headers else None
        for window in phase_windows(request, self.clock):
            span = self._tracer.start_span(window.phase, context=parent, start_time=window.start_ns,
                                           attributes=window.attributes)
            span.end(end_time=window.end_ns)

    # ---------------------------------------------------------------- load
    def on_step(self, step: StepLoad) -> None:
        """On the engine's thread: only bookkeeping; the points are handed to the batcher (whose
        per-point cost is higher) by the background thread."""
        with self._lock:
            self._pending.extend(self.load.step(step))

    def _push(self, points: list[LoadPoint]) -> None:
        add, start, attributes = self.batcher.add_sum, self.load.start_ns, _PHASE_ATTRIBUTES
        for p in points:
            add(p.metric, _UNITS[p.metric], attributes[p.phase], start, p.time_ns, p.value)

    def _run(self) -> None:
        while not self._stop.wait(self._heartbeat_ns / 1e9):
            self.heartbeat()
            self._send()

    def heartbeat(self, every_ns: int | None = None) -> None:
        with self._lock:
            self._pending.extend(
                self.load.heartbeat(time.time_ns(), self._heartbeat_ns if every_ns is None else every_ns))

    def _send(self) -> None:
        with self._lock:
            points, self._pending = self._pending, []
            finished, self._finished = self._finished, []
        for request, headers in finished:
            self._emit(request, headers)
        self._push(points)
        self.batcher.flush()

    def flush(self) -> None:
        """Send everything now, with a load point at this instant (so data covers every span)."""
        self.heartbeat(every_ns=0)
        self._send()
        self.tracer_provider.force_flush()

    def shutdown(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join()
        self.flush()
        self.tracer_provider.shutdown()
        atexit.unregister(self.shutdown)
