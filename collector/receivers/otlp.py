"""The ``otlp`` receiver: OTLP over gRPC (grpcio) and over HTTP (aiohttp), protobuf and JSON.

Both transports decode with the official opentelemetry-proto messages and hand whole requests to
the router. What they refuse (bad bytes, too large, wrong token, memory limiter) gets the status
OTLP clients understand, a message saying why, and a count under
``carbonspan.collector.rejected{reason}``; the server goes on serving.
"""

from __future__ import annotations

import asyncio
import ssl
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
from aiohttp import web
from google.protobuf.any_pb2 import Any as AnyMessage
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import DecodeError, Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from carbonspan.collector import otlp_json
from carbonspan.collector.pipeline import (
    REASON_MALFORMED,
    REASON_MEMORY_LIMIT,
    REASON_TOO_LARGE,
    REASON_UNAUTHENTICATED,
    REASON_UNSUPPORTED,
    Rejected,
    Router,
)
from carbonspan.collector.pipeline_settings import OtlpReceiverSettings, ServerSettings
from carbonspan.collector.receivers.loop_thread import AiohttpServer, LoopThread

CONTENT_PROTOBUF = "application/x-protobuf"
CONTENT_JSON = "application/json"
#: grpcio refuses larger messages itself (uncounted); up to it, the receiver checks and counts.
GRPC_CORE_LIMIT_FACTOR = 4


@dataclass(frozen=True)
class _Signal:
    name: str
    service: str
    request: type[Message]
    response: type[Message]
    http_path: str


SIGNALS = (
    _Signal("traces", "opentelemetry.proto.collector.trace.v1.TraceService", ExportTraceServiceRequest,
            ExportTraceServiceResponse, "/v1/traces"),
    _Signal("metrics", "opentelemetry.proto.collector.metrics.v1.MetricsService", ExportMetricsServiceRequest,
            ExportMetricsServiceResponse, "/v1/metrics"),
)
_GRPC_CODES = {
    REASON_MALFORMED: grpc.StatusCode.INVALID_ARGUMENT,
    REASON_TOO_LARGE: grpc.StatusCode.RESOURCE_EXHAUSTED,
    REASON_UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    REASON_MEMORY_LIMIT: grpc.StatusCode.RESOURCE_EXHAUSTED,
    REASON_UNSUPPORTED: grpc.StatusCode.INVALID_ARGUMENT,
}
_HTTP_STATUS = {REASON_MALFORMED: 400, REASON_TOO_LARGE: 413, REASON_UNAUTHENTICATED: 401,
                REASON_MEMORY_LIMIT: 429, REASON_UNSUPPORTED: 415}


def decode(signal: _Signal, body: bytes, content_type: str = CONTENT_PROTOBUF) -> Message:
    try:
        if content_type == CONTENT_JSON:
            return otlp_json.loads(body, signal.request())
        return signal.request.FromString(body)
    except (DecodeError, ValueError, UnicodeDecodeError) as exc:
        kind = "OTLP/JSON" if content_type == CONTENT_JSON else "OTLP protobuf"
        raise Rejected(REASON_MALFORMED, f"cannot decode {signal.request.__name__} as {kind}: {exc}") from exc


def _check_size(size: int, limit: int) -> None:
    if size > limit:
        raise Rejected(REASON_TOO_LARGE, f"request of {size} bytes is over the receiver's limit of {limit} bytes")


def _check_token(settings: ServerSettings, header: str | None) -> None:
    if settings.token is not None and header != settings.token.expected_header():
        what = "missing" if not header else "wrong"
        raise Rejected(REASON_UNAUTHENTICATED, f"{what} bearer token in the authorization header")


def _deliver(router: Router, receiver_id: str, signal: _Signal, request: Message) -> None:
    if signal.name == "traces":
        router.receive_traces(receiver_id, request)
    else:
        router.receive_metrics(receiver_id, request)


class OtlpReceiver:
    def __init__(self, component_id: str, settings: OtlpReceiverSettings, router: Router, loop: LoopThread) -> None:
        self.id = component_id
        self.settings = settings
        self.router = router
        self._loop = loop
        self._grpc: grpc.Server | None = None
        self._http: AiohttpServer | None = None

    def start(self) -> dict[str, str]:
        addresses = {}
        if self.settings.grpc is not None:
            addresses[f"{self.id}/grpc"] = self._start_grpc(self.settings.grpc)
        if self.settings.http is not None:
            addresses[f"{self.id}/http"] = self._start_http(self.settings.http)
        return addresses

    def stop(self, timeout_s: float) -> None:
        if self._grpc is not None:
            self._grpc.stop(grace=timeout_s).wait(timeout_s + 1)
            self._grpc = None
        if self._http is not None:
            self._http.stop(timeout_s)
            self._http = None

    # ------------------------------------------------------------------ gRPC
    def _start_grpc(self, settings: ServerSettings) -> str:
        limit = settings.max_bytes * GRPC_CORE_LIMIT_FACTOR
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix=f"{self.id}-grpc"),
                             options=[("grpc.max_receive_message_length", limit)])
        for signal in SIGNALS:
            handler = grpc.unary_unary_rpc_method_handler(  # bytes in: decoding errors are ours to report
                self._grpc_handler(signal, settings), response_serializer=signal.response.SerializeToString)
            server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(signal.service,
                                                                                  {"Export": handler}),))
        target = f"[{settings.host}]:{settings.port}" if ":" in settings.host else f"{settings.host}:{settings.port}"
        if settings.tls is not None:
            credentials = grpc.ssl_server_credentials(
                [(Path(settings.tls.key_file).read_bytes(), Path(settings.tls.cert_file).read_bytes())])
            port = server.add_secure_port(target, credentials)
        else:
            port = server.add_insecure_port(target)
        if port == 0:
            raise OSError(f"{self.id}: cannot bind gRPC to {target}")
        server.start()
        self._grpc = server
        return target.rsplit(":", 1)[0] + f":{port}"

    def _grpc_handler(self, signal: _Signal, settings: ServerSettings):
        def export(body: bytes, context: grpc.ServicerContext) -> Message:
            try:
                metadata = dict(context.invocation_metadata())
                _check_token(settings, metadata.get("authorization"))
                _check_size(len(body), settings.max_bytes)
                _deliver(self.router, self.id, signal, decode(signal, body))
            except Rejected as rejected:
                self.router.reject(self.id, rejected)
                code = _GRPC_CODES[rejected.reason]
                if rejected.retry_after_s is not None:
                    context.set_trailing_metadata((("grpc-status-details-bin",
                                                    _retry_status(code, rejected).SerializeToString()),))
                context.abort(code, rejected.message)
            return signal.response()

        return export

    # ------------------------------------------------------------------ HTTP
    def _start_http(self, settings: ServerSettings) -> str:
        # aiohttp inflates gzip bodies itself and counts the inflated size against client_max_size.
        app = web.Application(client_max_size=settings.max_bytes)
        for signal in SIGNALS:
            app.router.add_post(signal.http_path, self._http_handler(signal, settings))
        context = None
        if settings.tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(settings.tls.cert_file, settings.tls.key_file)
        self._http = AiohttpServer(self._loop, app, settings.host, settings.port, context)
        return self._http.start()

    def _http_handler(self, signal: _Signal, settings: ServerSettings):
        async def export(request: web.Request) -> web.Response:
            content_type = request.content_type
            try:
                _check_token(settings, request.headers.get("Authorization"))
                if content_type not in (CONTENT_PROTOBUF, CONTENT_JSON):
                    raise Rejected(REASON_UNSUPPORTED, f"Content-Type {content_type!r} is not {CONTENT_PROTOBUF} "
                                                       f"or {CONTENT_JSON}")
                try:
                    body = await request.read()
                except web.HTTPRequestEntityTooLarge as exc:
                    raise Rejected(REASON_TOO_LARGE, f"request body is over the receiver's limit of "
                                                     f"{settings.max_bytes} bytes") from exc
                message = decode(signal, body, content_type)
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(None, _deliver, self.router, self.id, signal, message)
            except Rejected as rejected:
                self.router.reject(self.id, rejected)
                headers = {"Retry-After": str(rejected.retry_after_s)} if rejected.retry_after_s else None
                status = _Status(_HTTP_STATUS[rejected.reason], rejected.message)
                return _response(status.message_for(content_type), content_type, status.http, headers)
            except Exception as exc:  # noqa: BLE001 - e.g. a broken gzip stream: the client's fault
                rejected = Rejected(REASON_MALFORMED, f"cannot read the request body: {exc}")
                self.router.reject(self.id, rejected)
                return _response(_Status(400, rejected.message).message_for(content_type), content_type, 400)
            return _response(signal.response(), content_type, 200)

        return export


@dataclass(frozen=True)
class _Status:
    http: int
    message: str

    def message_for(self, content_type: str) -> Message:
        code = {400: code_pb2.INVALID_ARGUMENT, 401: code_pb2.UNAUTHENTICATED, 413: code_pb2.RESOURCE_EXHAUSTED,
                429: code_pb2.RESOURCE_EXHAUSTED, 415: code_pb2.INVALID_ARGUMENT}[self.http]
        return status_pb2.Status(code=code, message=self.message)


def _response(message: Message, content_type: str, status: int, headers: dict | None = None) -> web.Response:
    if content_type == CONTENT_JSON:
        return web.Response(body=otlp_json.dumps(message), status=status, content_type=CONTENT_JSON, headers=headers)
    return web.Response(body=message.SerializeToString(), status=status, content_type=CONTENT_PROTOBUF,
                        headers=headers)


def _retry_status(code: grpc.StatusCode, rejected: Rejected) -> status_pb2.Status:
    """google.rpc.Status with RetryInfo: how OTLP/gRPC tells a client when to come back."""
    detail = AnyMessage()
    detail.Pack(error_details_pb2.RetryInfo(retry_delay=Duration(seconds=rejected.retry_after_s or 1)))
    return status_pb2.Status(code=code.value[0], message=rejected.message, details=[detail])
