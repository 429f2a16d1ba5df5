"""What every exporter offers the pipeline.

Exporters are called from the pipeline's thread with whole OTLP requests. ``export_*`` must not
block on the network: an exporter that talks to a remote peer queues the request and sends it
from its own thread, retrying with backoff; what it cannot keep it counts, never drops silently.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans


class Exporter(ABC):
    #: the signals this exporter type can take ("traces", "metrics"); the config loader checks
    #: that pipelines only name exporters for signals they support.
    signals: frozenset[str] = frozenset({"traces", "metrics"})
    #: True: the pipeline hands traces to ``export_trace_batch`` instead of ``export_traces``.
    takes_trace_batches: bool = False

    def __init__(self, name: str, config: Mapping[str, Any]) -> None:
        """``name`` is the config id (``otlp/jaeger``); ``config`` its section, already env-substituted.

        Raise ``carbonspan.collector.errors.ConfigError`` (key relative to the section) for bad values.
        """
        self.name = name

    def start(self) -> None:  # noqa: B027 - most exporters have nothing to start
        """Open sockets, files and threads. Called once before any export."""

    def export_traces(self, request: ExportTraceServiceRequest) -> None:
        raise NotImplementedError(f"{self.name} does not take traces")

    def export_metrics(self, request: ExportMetricsServiceRequest) -> None:
        raise NotImplementedError(f"{self.name} does not take metrics")

    def export_trace_batch(self, batch: Sequence[ResourceSpans], count: int) -> None:
        """The ``count`` spans of one export request, before the pipeline copies them into one: an
        exporter that only needs the request's bytes saves that copy (see ``takes_trace_batches``).
        The messages are the pipeline's: read them now, keep nothing."""
        raise NotImplementedError(f"{self.name} does not take trace batches")

    @abstractmethod
    def shutdown(self, timeout_s: float) -> None:
        """Send (or persist, for an on-disk queue) everything queued, within ``timeout_s``."""

    def queue_size(self) -> int:
        """Requests waiting to be sent (self-metric ``carbonspan.collector.queue.size``)."""
        return 0

    def stats(self) -> Mapping[str, int]:
        """Counters for self-metrics and logs: at least ``sent``, ``failed`` (gave up), ``retried``."""
        return {}
