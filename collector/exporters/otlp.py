"""``otlp``: OTLP over gRPC to Jaeger, Tempo or another collector, as the Collector's otlp exporter.

Keys: ``endpoint`` (host:port; an ``http://`` prefix means plaintext, ``https://`` TLS), ``tls``
(``insecure``, ``ca_file``, ``cert_file``, ``key_file``, ``server_name_override``; TLS with the
system roots unless ``insecure: true``, as in the Collector), ``headers`` (sent as gRPC metadata),
``compression`` (gzip default, none), ``timeout`` (5s), ``sending_queue``, ``retry_on_failure``.

Requests are serialized once when queued; the wire call uses the OTLP services' method paths from
opentelemetry-proto with that byte string as the message. Retryable codes are the OTLP spec's list;
a ``google.rpc.RetryInfo`` in the status details sets the wait before the next attempt.
"""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from carbonspan.collector.config_values import Section, parse_endpoint
from carbonspan.collector.errors import ConfigError
from carbonspan.collector.exporters.remote import RemoteExporter
from carbonspan.collector.exporters.sending_queue import Item, PermanentError, RetryableError

#: OTLP spec, "Failures": the codes after which the same request may succeed later
RETRYABLE_CODES = frozenset({
    grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.ABORTED,
    grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DATA_LOSS,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
})

_SERVICES = {
    "traces": (trace_service_pb2, "TraceService", trace_service_pb2.ExportTraceServiceResponse, "rejected_spans"),
    "metrics": (metrics_service_pb2, "MetricsService", metrics_service_pb2.ExportMetricsServiceResponse,
                "rejected_data_points"),
}
# grpcio's reconnect backoff grows to 120 s by default: a peer that was down for a minute would stay
# unreachable long after it is back. The sending queue's retries already pace the attempts.
_CHANNEL_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 200), ("grpc.max_reconnect_backoff_ms", 2000)]


class OtlpGrpcExporter(RemoteExporter):
    def _configure(self, section: Section) -> None:
        endpoint = section.string("endpoint")
        if not endpoint:
            raise ConfigError(section.key("endpoint"), "required: host:port of the OTLP gRPC receiver")
        tls = section.section("tls")
        scheme, _, rest = endpoint.rpartition("://")
        if scheme not in ("", "http", "https"):
            raise ConfigError(section.key("endpoint"), f"expected host:port, got {endpoint!r}")
        host, port = parse_endpoint(section.key("endpoint"), rest)
        self.target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.insecure = scheme == "http" or (scheme == "" and tls.boolean("insecure", False))
        self._ca = _read(tls, "ca_file")
        self._cert = _read(tls, "cert_file")
        self._key = _read(tls, "key_file")
        self._server_name = tls.string("server_name_override")
        self._metadata = tuple((k.lower(), v) for k, v in self.headers.items())  # gRPC wants lower-case keys

    def _open(self) -> None:
        compression = grpc.Compression.Gzip if self.gzip else grpc.Compression.NoCompression
        options = list(_CHANNEL_OPTIONS)
        if self.insecure:
            self._channel = grpc.insecure_channel(self.target, options=options, compression=compression)
        else:
            if self._server_name:
                options.append(("grpc.ssl_target_name_override", self._server_name))
            credentials = grpc.ssl_channel_credentials(self._ca, self._key, self._cert)
            self._channel = grpc.secure_channel(self.target, credentials, options=options, compression=compression)
        self._calls = {}
        for signal, (module, service, response, _) in _SERVICES.items():
            method = module.DESCRIPTOR.services_by_name[service].methods_by_name["Export"]
            # no request serializer: the queued bytes are the serialized request
            self._calls[signal] = self._channel.unary_unary(
                f"/{method.containing_service.full_name}/{method.name}",
                request_serializer=None, response_deserializer=response.FromString)

    def _close(self) -> None:
        self._channel.close()

    def _send(self, item: Item) -> None:
        try:
            response = self._calls[item.signal](item.body, timeout=self.timeout_s, metadata=self._metadata)
        except grpc.RpcError as error:
            code, details = error.code(), error.details()
            message = f"{self.target}: {code.name}: {details}"
            if code in RETRYABLE_CODES:
                raise RetryableError(message, _retry_delay_s(error)) from None
            raise PermanentError(message) from None
        rejected = getattr(response.partial_success, _SERVICES[item.signal][3])
        if rejected or response.partial_success.error_message:
            self._partial_success(item, rejected, response.partial_success.error_message)


def _read(tls: Section, key: str) -> bytes | None:
    path = tls.string(key)
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as error:
        raise ConfigError(tls.key(key), f"cannot read {path}: {error.strerror}") from None


def _retry_delay_s(error: grpc.RpcError) -> float | None:
    """The delay a ``google.rpc.RetryInfo`` in the status details asks for, if the server sent one."""
    for key, value in error.trailing_metadata() or ():
        if key != "grpc-status-details-bin":
            continue
        status = status_pb2.Status.FromString(value)
        for detail in status.details:
            info = error_details_pb2.RetryInfo()
            if detail.Unpack(info):
                return info.retry_delay.seconds + info.retry_delay.nanos / 1e9
    return None
