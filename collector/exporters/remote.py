"""What the ``otlp`` and ``otlphttp`` exporters share: the config keys every Collector network
exporter has (``timeout``, ``headers``, ``compression``, ``sending_queue``, ``retry_on_failure``), and
the hand-off of each request, encoded once, to the sending queue. A subclass only knows its wire."""

from __future__ import annotations

import io
import logging
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

from google.protobuf import proto
from google.protobuf.message import Message
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans

from carbonspan.collector.config_values import Section
from carbonspan.collector.exporters._counts import count_points, count_spans
from carbonspan.collector.exporters.base import Exporter
from carbonspan.collector.exporters.sending_queue import Item, QueueSettings, RetrySettings, SendingQueue

logger = logging.getLogger(__name__)


def _length_prefixed(message: Message) -> bytes:
    out = io.BytesIO()
    proto.serialize_length_prefixed(message, out)
    return out.getvalue()


def _resource_spans_tag() -> bytes:
    """The key of ``ExportTraceServiceRequest.resource_spans`` as the library writes it: a request
    holding one empty item, less that item's length prefix."""
    one = ExportTraceServiceRequest(resource_spans=[ResourceSpans()]).SerializeToString()
    empty = _length_prefixed(ResourceSpans())
    if not one.endswith(empty):
        raise RuntimeError("protobuf wrote an ExportTraceServiceRequest as no longer a repeated field")
    return one[:-len(empty)]


_RESOURCE_SPANS_TAG = _resource_spans_tag()


def encode_trace_batch(batch: Sequence[ResourceSpans]) -> bytes:
    """``ExportTraceServiceRequest(resource_spans=batch).SerializeToString()`` without copying every
    span into the request first: a message's repeated field is written as its items one after the
    other, each under the field's key and length-prefixed by the library."""
    out = io.BytesIO()
    for rs in batch:
        out.write(_RESOURCE_SPANS_TAG)
        proto.serialize_length_prefixed(rs, out)
    return out.getvalue()


class RemoteExporter(Exporter):
    #: the Collector's default per-request timeout for this exporter type
    default_timeout = "5s"
    takes_trace_batches = True  # it queues the request's bytes, which need no request message

    def __init__(self, name: str, config: Mapping[str, Any]) -> None:
        super().__init__(name, config)
        section = Section(config)
        self.timeout_s = section.seconds("timeout", self.default_timeout)
        self.headers = section.string_map("headers")
        # the Collector writes "" or none for no compression
        self.gzip = section.choice("compression", ("gzip", "none", ""), "gzip") == "gzip"
        self.queue_settings = QueueSettings.from_config(section.section("sending_queue"))
        retry = RetrySettings.from_config(section.section("retry_on_failure"))
        self._configure(section)
        section.check_unknown()
        self._queue = SendingQueue(name, self._send, self.queue_settings, retry)

    def start(self) -> None:
        self._open()
        self._queue.start()

    def export_traces(self, request: ExportTraceServiceRequest) -> None:
        self._queue.put("traces", self._encode(request), count_spans(request))

    def export_trace_batch(self, batch: Sequence[ResourceSpans], count: int) -> None:
        self._queue.put("traces", encode_trace_batch(batch), count)

    def export_metrics(self, request: ExportMetricsServiceRequest) -> None:
        self._queue.put("metrics", self._encode(request), count_points(request))

    def shutdown(self, timeout_s: float) -> None:
        self._queue.shutdown(timeout_s)
        self._close()

    def queue_size(self) -> int:
        return self._queue.size()

    def stats(self) -> Mapping[str, int]:
        return self._queue.stats()

    @abstractmethod
    def _configure(self, section: Section) -> None:
        """Read the keys only this exporter type has (endpoint, tls...)."""

    @abstractmethod
    def _open(self) -> None: ...

    @abstractmethod
    def _close(self) -> None: ...

    def _encode(self, request: Message) -> bytes:
        return request.SerializeToString()

    @abstractmethod
    def _send(self, item: Item) -> None:
        """Send one request; raise RetryableError or PermanentError."""

    def _partial_success(self, item: Item, rejected: int, message: str) -> None:
        """The peer took the request but refused part of it: resending cannot help, so say so."""
        logger.warning("%s: peer rejected %d of %d items of a %s request: %s",
                       self.name, rejected, item.count, item.signal, message)
