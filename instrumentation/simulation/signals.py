"""What the simulated workers put on the wire: OTLP spans and load counters.

Spans are made with the OpenTelemetry SDK, as an instrumented worker makes them (one tracer
provider per node, so each span carries its node's resource; explicit start and end times from
simulated time; ids from a seeded generator so runs repeat), and encoded with the OTLP exporter's
own encoder. Load counters go through the same ``TimestampedMetricBatcher`` the vLLM plugin and
the sampler use, so every step boundary keeps its own timestamp.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator

from carbonspan.instrumentation.otlp_push import TimestampedMetricBatcher
from carbonspan.instrumentation.simulation.engine import FleetSimulation, PhaseRecord, SimRequest, Worker
from carbonspan.processors import semconv

SCOPE = "carbonspan.instrumentation.simulation"
ROOT_SPAN_NAME = "llm.request"


class SeededIds(IdGenerator):
    """Trace and span ids from a seeded generator: the same seed gives the same trace ids."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def generate_span_id(self) -> int:
        return self._rng.getrandbits(64) or 1

    def generate_trace_id(self) -> int:
        return self._rng.getrandbits(128) or 1


class CapturingSender:
    """A metrics 'sender' that keeps each request built by the batcher."""

    def __init__(self) -> None:
        self.requests: list[ExportMetricsServiceRequest] = []

    def send(self, request: ExportMetricsServiceRequest) -> None:
        self.requests.append(request)

    def close(self) -> None:
        pass


class SpanSignals:
    """Phase spans on the worker nodes, parented on a root span per request on the router."""

    def __init__(self, sim: FleetSimulation, seed: int) -> None:
        self._exporter = InMemorySpanExporter()
        ids = SeededIds(random.Random(seed))
        self._tracers = {}
        for name, worker in sim.workers.items():
            self._tracers[name] = self._tracer(worker.node.resource(), ids)
        self._root_tracer = self._tracer(sim.fleet.router_resource(), ids)
        self._model = sim.fleet.model
        self._roots: dict[int, trace.Span] = {}

    def _tracer(self, attributes: dict, ids: IdGenerator) -> trace.Tracer:
        provider = TracerProvider(resource=Resource(attributes), id_generator=ids)
        provider.add_span_processor(SimpleSpanProcessor(self._exporter))
        return provider.get_tracer(SCOPE)

    def request_arrived(self, request: SimRequest) -> None:
        root = self._root_tracer.start_span(
            ROOT_SPAN_NAME,
            kind=trace.SpanKind.SERVER,
            start_time=request.arrival.time_ns,
            attributes={
                semconv.GEN_AI_REQUEST_MODEL: self._model,
                semconv.GEN_AI_REQUEST_ID: request.request_id,
                semconv.GEN_AI_USAGE_INPUT_TOKENS: request.arrival.prompt_tokens,
            },
        )
        self._roots[request.arrival.index] = root

    def phase_ended(self, request: SimRequest, record: PhaseRecord) -> None:
        root = self._roots[request.arrival.index]
        attributes = {
            semconv.CARBON_PHASE: record.phase,
            semconv.GEN_AI_REQUEST_MODEL: self._model,
            semconv.GEN_AI_REQUEST_ID: request.request_id,
            semconv.GEN_AI_USAGE_INPUT_TOKENS: request.arrival.prompt_tokens,
            **record.attributes,
        }
        if record.phase in semconv.COMPUTE_PHASES:
            attributes[semconv.CARBON_TOKENS] = record.tokens
        if record.phase == semconv.PHASE_DECODE:
            attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] = request.arrival.output_tokens
        span = self._tracers[record.node.name].start_span(
            record.phase,
            context=trace.set_span_in_context(root),
            kind=trace.SpanKind.INTERNAL,
            start_time=record.start_ns,
            attributes=attributes,
        )
        span.end(end_time=record.end_ns)

    def request_finished(self, request: SimRequest) -> None:
        root = self._roots.pop(request.arrival.index)
        root.set_attribute(semconv.GEN_AI_USAGE_OUTPUT_TOKENS, request.arrival.output_tokens)
        root.end(end_time=request.finished_ns)

    def drain(self) -> ExportTraceServiceRequest | None:
        """Every span ended since the last drain, as one OTLP request (None when there are none)."""
        spans = self._exporter.get_finished_spans()
        if not spans:
            return None
        self._exporter.clear()
        return encode_spans(spans)


class LoadSignals:
    """Each worker's ``carbon.worker.tokens`` and ``carbon.worker.request_time`` by phase."""

    def __init__(self, workers: Iterable[Worker], start_ns: int) -> None:
        self._capture = CapturingSender()
        self._start_ns = start_ns
        self._batchers = [
            (w, TimestampedMetricBatcher(w.node.resource(), SCOPE, self._capture)) for w in workers
        ]

    def drain(self) -> list[ExportMetricsServiceRequest]:
        """The counter points recorded since the last drain: one OTLP request per worker."""
        for worker, batcher in self._batchers:
            for point in worker.drain_points():
                for phase in (semconv.PHASE_PREFILL, semconv.PHASE_DECODE):
                    attrs = {semconv.CARBON_PHASE: phase}
                    batcher.add_sum(semconv.CARBON_WORKER_TOKENS, semconv.UNIT_TOKEN, attrs, self._start_ns,
                                    point.time_ns, point.tokens[phase])
                    batcher.add_sum(semconv.CARBON_WORKER_REQUEST_TIME, semconv.UNIT_SECOND, attrs, self._start_ns,
                                    point.time_ns, point.request_seconds[phase])
            batcher.flush()
        out, self._capture.requests = self._capture.requests, []
        return out
