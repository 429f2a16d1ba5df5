"""Push OTLP metrics in which every sample keeps its own timestamp.

Why not the OpenTelemetry SDK's metric pipeline: it aggregates. Between two exports it keeps one
point per series (a gauge's last value, a counter's running total), so ten 100 ms samples taken
between two 1 s exports would reach the collector as one, and a 300 ms prefill span could not be
priced. So this module builds ``ExportMetricsServiceRequest`` messages itself with
opentelemetry-proto, one data point per sample, and sends them with grpcio's ``MetricsServiceStub``
or as an HTTP/protobuf POST with urllib3 (no background threads, unlike grpcio; about half the CPU
of requests per POST, see docs/sampler.md "Cost"), configured from the same ``OTEL_EXPORTER_OTLP_*``
variables as the SDK's exporters. The SDK is still used for what it does well: the resource (``Resource.create``
reads ``OTEL_RESOURCE_ATTRIBUTES`` and ``OTEL_SERVICE_NAME``) and the header syntax.

Shared by the GPU power sampler and the vLLM plugin's worker load counters.
"""

from __future__ import annotations

import gzip
import logging
import os
import sys
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TextIO
from urllib.parse import urlparse

import grpc
import urllib3
from google.protobuf import json_format
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2_grpc import MetricsServiceStub
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AggregationTemporality,
    NumberDataPoint,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource as ProtoResource
from opentelemetry.sdk.environment_variables import (
    OTEL_EXPORTER_OTLP_CERTIFICATE,
    OTEL_EXPORTER_OTLP_COMPRESSION,
    OTEL_EXPORTER_OTLP_ENDPOINT,
    OTEL_EXPORTER_OTLP_HEADERS,
    OTEL_EXPORTER_OTLP_INSECURE,
    OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE,
    OTEL_EXPORTER_OTLP_METRICS_COMPRESSION,
    OTEL_EXPORTER_OTLP_METRICS_ENDPOINT,
    OTEL_EXPORTER_OTLP_METRICS_HEADERS,
    OTEL_EXPORTER_OTLP_METRICS_INSECURE,
    OTEL_EXPORTER_OTLP_METRICS_PROTOCOL,
    OTEL_EXPORTER_OTLP_METRICS_TIMEOUT,
    OTEL_EXPORTER_OTLP_PROTOCOL,
    OTEL_EXPORTER_OTLP_TIMEOUT,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.util.re import parse_env_headers

from carbonspan.processors.otlp import AttributeValue, python_to_any_value
from carbonspan.processors.semconv import SERVICE_NAME

logger = logging.getLogger(__name__)

PROTOCOL_GRPC = "grpc"
PROTOCOL_HTTP_PROTOBUF = "http/protobuf"
PROTOCOLS = (PROTOCOL_GRPC, PROTOCOL_HTTP_PROTOBUF)
_DEFAULT_ENDPOINTS = {PROTOCOL_GRPC: "http://localhost:4317", PROTOCOL_HTTP_PROTOBUF: "http://localhost:4318"}
_HTTP_METRICS_PATH = "/v1/metrics"
# The Python SDK reads OTEL_EXPORTER_OTLP_TIMEOUT as seconds (the spec says milliseconds); we follow
# the SDK so that one environment configures both the same way.
_DEFAULT_TIMEOUT_S = 10.0


def _env(metrics_key: str, generic_key: str) -> str | None:
    return os.environ.get(metrics_key) or os.environ.get(generic_key)


class OtlpMetricsSender:
    """Sends ready-made ``ExportMetricsServiceRequest`` messages to one OTLP endpoint."""

    def __init__(
        self,
        endpoint: str,
        protocol: str = PROTOCOL_GRPC,
        headers: Mapping[str, str] | None = None,
        timeout_s: float = _DEFAULT_TIMEOUT_S,
        insecure: bool | None = None,
        certificate_file: str | None = None,
        gzip_compression: bool = False,
    ) -> None:
        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown OTLP protocol {protocol!r}; use one of {', '.join(PROTOCOLS)}")
        self.endpoint = endpoint
        self.protocol = protocol
        self.timeout_s = timeout_s
        self._headers = dict(headers or {})
        self._gzip = gzip_compression
        parsed = urlparse(endpoint)
        if protocol == PROTOCOL_GRPC:
            if insecure is None:
                insecure = parsed.scheme == "http"
            target = parsed.netloc or endpoint
            compression = grpc.Compression.Gzip if gzip_compression else grpc.Compression.NoCompression
            if insecure:
                self._channel = grpc.insecure_channel(target, compression=compression)
            else:
                root = _read_file(certificate_file) if certificate_file else None
                credentials = grpc.ssl_channel_credentials(root_certificates=root)
                self._channel = grpc.secure_channel(target, credentials, compression=compression)
            self._stub = MetricsServiceStub(self._channel)
            # gRPC metadata keys must be lower case.
            self._metadata = tuple((k.lower(), v) for k, v in self._headers.items())
        else:
            self._headers = {"Content-Type": "application/x-protobuf", **self._headers}
            if gzip_compression:
                self._headers["Content-Encoding"] = "gzip"
            # One retry, for a connection that failed to open (urllib3 never retries a POST whose
            # response failed to arrive: the receiver may have taken it). Anything else raises,
            # and the batcher keeps the points for the next flush.
            self._pool = urllib3.PoolManager(
                ca_certs=certificate_file, retries=urllib3.Retry(total=1, redirect=0), timeout=timeout_s
            )

    @classmethod
    def from_env(
        cls,
        endpoint: str | None = None,
        protocol: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
        *,
        default_protocol: str = PROTOCOL_GRPC,
    ) -> OtlpMetricsSender:
        """Explicit arguments win over ``OTEL_EXPORTER_OTLP_METRICS_*``, which win over
        ``OTEL_EXPORTER_OTLP_*``, which win over ``default_protocol`` (gRPC, as the vLLM plugin's
        span exporter; the GPU sampler passes http/protobuf, the OTel spec's default). An HTTP
        endpoint given without a path gets ``/v1/metrics``, as the generic
        ``OTEL_EXPORTER_OTLP_ENDPOINT`` does in the SDK."""
        protocol = protocol or _env(OTEL_EXPORTER_OTLP_METRICS_PROTOCOL, OTEL_EXPORTER_OTLP_PROTOCOL)
        chosen = protocol
        protocol = (protocol or default_protocol).strip()
        metrics_endpoint = os.environ.get(OTEL_EXPORTER_OTLP_METRICS_ENDPOINT)
        if endpoint is None and metrics_endpoint:
            endpoint = metrics_endpoint  # signal-specific: used exactly as given
        elif endpoint is None:
            endpoint = os.environ.get(OTEL_EXPORTER_OTLP_ENDPOINT) or _DEFAULT_ENDPOINTS.get(
                protocol, _DEFAULT_ENDPOINTS[PROTOCOL_GRPC]
            )
            if protocol == PROTOCOL_HTTP_PROTOBUF:
                endpoint = endpoint.rstrip("/") + _HTTP_METRICS_PATH
        if protocol == PROTOCOL_HTTP_PROTOBUF and urlparse(endpoint).path in ("", "/"):
            endpoint = endpoint.rstrip("/") + _HTTP_METRICS_PATH
        if not chosen and protocol == PROTOCOL_HTTP_PROTOBUF and urlparse(endpoint).port == 4317:
            logger.warning("OTLP over HTTP to %s, the OTLP/gRPC port: set OTEL_EXPORTER_OTLP_PROTOCOL=grpc "
                           "(or send to the receiver's HTTP port, 4318)", endpoint)
        if headers is None:
            raw = _env(OTEL_EXPORTER_OTLP_METRICS_HEADERS, OTEL_EXPORTER_OTLP_HEADERS)
            headers = parse_env_headers(raw, liberal=True) if raw else {}
        if timeout_s is None:
            raw_timeout = _env(OTEL_EXPORTER_OTLP_METRICS_TIMEOUT, OTEL_EXPORTER_OTLP_TIMEOUT)
            timeout_s = float(raw_timeout) if raw_timeout else _DEFAULT_TIMEOUT_S
        scheme = urlparse(endpoint).scheme
        insecure_env = _env(OTEL_EXPORTER_OTLP_METRICS_INSECURE, OTEL_EXPORTER_OTLP_INSECURE)
        insecure = (insecure_env or "").strip().lower() == "true" if scheme not in ("http", "https") else None
        compression = (_env(OTEL_EXPORTER_OTLP_METRICS_COMPRESSION, OTEL_EXPORTER_OTLP_COMPRESSION) or "none")
        return cls(
            endpoint,
            protocol,
            headers,
            timeout_s,
            insecure=insecure,
            certificate_file=_env(OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE, OTEL_EXPORTER_OTLP_CERTIFICATE),
            gzip_compression=compression.strip().lower() == "gzip",
        )

    def send(self, request: ExportMetricsServiceRequest) -> None:
        """Raises on any failure (connection refused, timeout, non-2xx status) so the caller
        keeps the data for the next attempt."""
        if self.protocol == PROTOCOL_GRPC:
            response = self._stub.Export(request, metadata=self._metadata, timeout=self.timeout_s)
        else:
            body = request.SerializeToString()
            if self._gzip:
                body = gzip.compress(body)
            http_response = self._pool.request("POST", self.endpoint, body=body, headers=self._headers)
            if http_response.status >= 300:
                raise OSError(f"OTLP/HTTP receiver answered {http_response.status}: {http_response.data[:200]!r}")
            response = ExportMetricsServiceResponse()
            if http_response.headers.get("Content-Type", "").startswith("application/x-protobuf"):
                response.ParseFromString(http_response.data)
        rejected = response.partial_success.rejected_data_points
        if rejected:
            # Resending would be rejected again: report and move on.
            logger.warning(
                "OTLP receiver rejected %d data points: %s", rejected, response.partial_success.error_message
            )

    def close(self) -> None:
        if self.protocol == PROTOCOL_GRPC:
            self._channel.close()
        else:
            self._pool.clear()


class ConsoleMetricsSender:
    """Writes each request as one line of OTLP JSON: for checking a node's GPUs without a collector."""

    def __init__(self, stream: TextIO = sys.stdout) -> None:
        self._stream = stream

    def send(self, request: ExportMetricsServiceRequest) -> None:
        self._stream.write(json_format.MessageToJson(request, indent=None) + "\n")
        self._stream.flush()

    def close(self) -> None:
        self._stream.flush()


def _read_file(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def merged_resource_attributes(
    explicit: Mapping[str, AttributeValue], defaults: Mapping[str, AttributeValue] | None = None
) -> dict[str, AttributeValue]:
    """defaults < OTEL_RESOURCE_ATTRIBUTES / OTEL_SERVICE_NAME < explicit values (None = unset)."""
    attributes: dict[str, AttributeValue] = dict(
        Resource.create({k: v for k, v in explicit.items() if v is not None}).attributes
    )
    for key, value in (defaults or {}).items():
        unset = key not in attributes or (
            key == SERVICE_NAME and str(attributes[key]).startswith("unknown_service")
        )
        if unset and value is not None:
            attributes[key] = value
    return attributes


def _hashable(value: AttributeValue) -> object:
    return tuple(value) if isinstance(value, list | tuple) else value


# A buffered point: (metric name, series key, start time, time, value). A plain tuple, not a
# dataclass: the sampler adds one per GPU and metric ten times a second, and a tuple is the
# cheapest object Python builds.
_Point = tuple[str, tuple, int, int, float]


@dataclass(frozen=True, slots=True)
class _MetricKind:
    unit: str
    is_sum: bool
    monotonic: bool


class TimestampedMetricBatcher:
    """Buffers timestamped points and sends them all in one OTLP request per flush.

    Every point keeps its own timestamp (see the module docstring for why the SDK cannot do this).
    The buffer is bounded: while the receiver is down points accumulate up to ``max_points``,
    then the oldest are dropped and counted in ``dropped_points``; the rest go out at the next
    successful flush, in order.

    Cost matters (the sampler adds ~160 points a second per node): a series' attributes are
    converted to protobuf once, as a ``NumberDataPoint`` template that each point of the series
    merges in C (``MergeFrom``), and an attribute mapping seen before is recognised by its items
    without sorting them again.
    """

    def __init__(
        self,
        resource: Mapping[str, AttributeValue],
        scope_name: str,
        sender: OtlpMetricsSender | ConsoleMetricsSender,
        max_points: int = 200_000,
        *,
        resource_defaults: Mapping[str, AttributeValue] | None = None,
    ) -> None:
        if max_points < 1:
            raise ValueError("max_points must be at least 1")
        self.resource_attributes = merged_resource_attributes(resource, resource_defaults)
        self._resource = ProtoResource(
            attributes=[
                KeyValue(key=k, value=python_to_any_value(v)) for k, v in self.resource_attributes.items()
            ]
        )
        self._scope = InstrumentationScope(name=scope_name)
        self._sender = sender
        self._max_points = max_points
        self._points: deque[_Point] = deque()
        self._kinds: dict[str, _MetricKind] = {}
        self._series_template: dict[tuple, NumberDataPoint] = {}  # series key -> its attributes, as protobuf
        self._series_keys: dict[tuple, tuple] = {}  # the items as given -> the series key (sorted items)
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False
        self.dropped_points = 0
        self.sent_points = 0
        self.failed_flushes = 0

    def add_sum(
        self,
        name: str,
        unit: str,
        attributes: Mapping[str, AttributeValue],
        start_time_ns: int,
        time_ns: int,
        value: float,
        monotonic: bool = True,
    ) -> None:
        """A point of a cumulative Sum (the running total since ``start_time_ns``)."""
        self.add_points([self.series(name, unit, attributes, is_sum=True, monotonic=monotonic)
                         + (start_time_ns, time_ns, float(value))])

    def add_gauge(
        self, name: str, unit: str, attributes: Mapping[str, AttributeValue], time_ns: int, value: float
    ) -> None:
        self.add_points([self.series(name, unit, attributes, is_sum=False) + (0, time_ns, float(value))])

    def series(
        self, name: str, unit: str, attributes: Mapping[str, AttributeValue], *, is_sum: bool, monotonic: bool = False
    ) -> tuple[str, tuple]:
        """A series' handle, for a caller that adds many points to few series (the sampler: two
        per GPU, ten times a second): ``handle + (start_time_ns, time_ns, value)`` is a point for
        ``add_points`` (start 0 for a gauge), built without looking the series up again."""
        known = self._kinds.get(name)
        if known is None or known.unit != unit or known.is_sum != is_sum or known.monotonic != monotonic:
            self._check_kind(name, _MetricKind(unit, is_sum, monotonic))
        return name, self._series_key(attributes)

    def add_points(self, points: list[_Point]) -> None:
        """Points made from ``series`` handles, buffered under one lock."""
        with self._lock:
            excess = len(self._points) + len(points) - self._max_points
            if excess > 0:
                for _ in range(min(excess, len(self._points))):
                    self._points.popleft()
                self._count_drops(excess)
                points = points[-self._max_points :]
            self._points.extend(points)

    def _check_kind(self, name: str, kind: _MetricKind) -> None:
        with self._lock:
            known = self._kinds.setdefault(name, kind)
        if known != kind:
            raise ValueError(f"metric {name!r} was first added as {known}, now as {kind}")

    def _series_key(self, attributes: Mapping[str, AttributeValue]) -> tuple:
        try:
            given = tuple(attributes.items())
            series = self._series_keys.get(given)
        except TypeError:  # a list value: not hashable as given
            given, series = None, None
        if series is None:
            series = tuple(sorted((k, _hashable(v)) for k, v in attributes.items()))
            with self._lock:
                if series not in self._series_template:
                    self._series_template[series] = NumberDataPoint(
                        attributes=[KeyValue(key=k, value=python_to_any_value(v)) for k, v in attributes.items()]
                    )
                if given is not None:
                    self._series_keys[given] = series
        return series

    def _count_drops(self, n: int) -> None:
        if self.dropped_points == 0 or self.dropped_points // 10_000 != (self.dropped_points + n) // 10_000:
            logger.warning("metric buffer full (%d points): dropping the oldest", self._max_points)
        self.dropped_points += n

    @property
    def buffered_points(self) -> int:
        return len(self._points)

    def build_request(self, points: list[_Point]) -> ExportMetricsServiceRequest:
        """One Metric per name; its data points in series order, each series in time order."""
        by_name: dict[str, dict[tuple, list[_Point]]] = {}
        for point in points:
            by_name.setdefault(point[0], {}).setdefault(point[1], []).append(point)
        request = ExportMetricsServiceRequest()
        scope_metrics = request.resource_metrics.add(resource=self._resource).scope_metrics.add(scope=self._scope)
        for name, series_points in by_name.items():
            kind = self._kinds[name]
            metric = scope_metrics.metrics.add(name=name, unit=kind.unit)
            if kind.is_sum:
                metric.sum.aggregation_temporality = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
                metric.sum.is_monotonic = kind.monotonic
                add = metric.sum.data_points.add
            else:
                add = metric.gauge.data_points.add
            for series, ps in series_points.items():
                template = self._series_template[series]
                for _, _, start_time_ns, time_ns, value in ps:
                    add(start_time_unix_nano=start_time_ns, time_unix_nano=time_ns, as_double=value).MergeFrom(template)
        return request

    def flush(self) -> bool:
        """Send everything buffered. True on success (or nothing to send); on failure the points
        go back to the front of the buffer for the next flush."""
        with self._flush_lock:
            with self._lock:
                batch = list(self._points)
                self._points.clear()
            if not batch:
                return True
            try:
                self._sender.send(self.build_request(batch))
            except Exception as error:  # noqa: BLE001 - any transport failure means "keep and retry"
                self.failed_flushes += 1
                if not self._failing:
                    logger.warning("OTLP export failed, keeping %d points for retry: %s", len(batch), error)
                self._failing = True
                self._requeue(batch)
                return False
            if self._failing:
                logger.info("OTLP export recovered")
            self._failing = False
            self.sent_points += len(batch)
            return True

    def _requeue(self, batch: list[_Point]) -> None:
        with self._lock:
            self._points.extendleft(reversed(batch))
            excess = len(self._points) - self._max_points
            for _ in range(max(0, excess)):
                self._points.popleft()
            if excess > 0:
                self._count_drops(excess)

    def start(self, interval_s: float = 1.0) -> None:
        """Flush every ``interval_s`` from a daemon thread until ``stop()``."""
        if self._thread is not None:
            raise RuntimeError("batcher already started")
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, args=(interval_s,), name="carbonspan-otlp-push", daemon=True
        )
        self._thread.start()

    def _run(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            self.flush()

    def stop(self, flush: bool = True) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if flush:
            self.flush()
