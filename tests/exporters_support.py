"""Real OTLP peers for the exporter tests: a grpcio server with the OTLP trace and metrics services,
and helpers to build requests and wait for what arrives."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent import futures
from pathlib import Path

import grpc
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from otlp_data import T0, SpanSpec, node_resource, spans

from carbonspan.processors import semconv


def free_port() -> int:
    """A port nothing listens on now (for a peer that starts later on a known port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def trace_request(n_spans: int, *, gco2e: float = 0.5) -> trace_service_pb2.ExportTraceServiceRequest:
    specs = [SpanSpec(semconv.PHASE_DECODE, T0 + i, T0 + i + 10**8, tokens=i,
                      attributes={semconv.CARBON_TOTAL_GCO2E: gco2e}) for i in range(n_spans)]
    return trace_service_pb2.ExportTraceServiceRequest(resource_spans=[spans(node_resource(["GPU-1"]), specs)])


#: how the peer answers one call: accept (None), a status code, or a code with a RetryInfo delay in seconds
Answer = grpc.StatusCode | tuple[grpc.StatusCode, float] | None


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, and its key, made with the openssl command."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


class OtlpGrpcPeer(trace_service_pb2_grpc.TraceServiceServicer, metrics_service_pb2_grpc.MetricsServiceServicer):
    """Records every request; ``fail`` (a status code or None) decides the answer to each."""

    def __init__(self, port: int = 0, fail: Callable[[], Answer] = lambda: None,
                 credentials: grpc.ServerCredentials | None = None) -> None:
        self.fail = fail
        self.attempts: list[float] = []
        self.traces: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.metrics: list[metrics_service_pb2.ExportMetricsServiceRequest] = []
        self.metadata: list[dict[str, str]] = []
        self._lock = threading.Lock()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self.server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(self, self.server)
        address = f"127.0.0.1:{port}"
        self.port = (self.server.add_secure_port(address, credentials) if credentials
                     else self.server.add_insecure_port(address))
        self.endpoint = f"127.0.0.1:{self.port}"

    def __enter__(self) -> OtlpGrpcPeer:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop(grace=None)

    def _answer(self, context: grpc.ServicerContext, store: list, request: object) -> bool:
        self.attempts.append(time.monotonic())
        answer = self.fail()
        if answer is not None:
            code, retry_delay_s = answer if isinstance(answer, tuple) else (answer, None)
            if retry_delay_s is not None:  # google.rpc.RetryInfo, as throttling servers send it
                info = error_details_pb2.RetryInfo()
                info.retry_delay.FromNanoseconds(int(retry_delay_s * 1e9))
                status = status_pb2.Status(code=code.value[0], message="slow down")
                status.details.add().Pack(info)
                context.set_trailing_metadata((("grpc-status-details-bin", status.SerializeToString()),))
            context.abort(code, "test peer says no")
        with self._lock:
            store.append(request)
            self.metadata.append(dict(context.invocation_metadata()))
        return True

    def Export(self, request, context):  # noqa: N802 - grpc method name
        if isinstance(request, trace_service_pb2.ExportTraceServiceRequest):
            self._answer(context, self.traces, request)
            return trace_service_pb2.ExportTraceServiceResponse()
        self._answer(context, self.metrics, request)
        return metrics_service_pb2.ExportMetricsServiceResponse()

    def span_count(self) -> int:
        with self._lock:
            return sum(len(ss.spans) for r in self.traces for rs in r.resource_spans for ss in rs.scope_spans)


def wait_for(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


class OtlpHttpPeer:
    """An OTLP/HTTP receiver on 127.0.0.1: answers each POST with the next of ``statuses`` (then 200)."""

    def __init__(self, statuses: list[tuple[int, dict[str, str]]] | None = None) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.statuses = list(statuses or [])
        self.requests: list[tuple[str, dict[str, str], bytes, float]] = []  # path, headers, body, time
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with peer._lock:
                    status, headers = peer.statuses.pop(0) if peer.statuses else (200, {})
                    peer.requests.append((self.path, dict(self.headers), body, time.monotonic()))
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> OtlpHttpPeer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join()
