"""The Replay sends real OTLP/gRPC to a real receiver on 127.0.0.1, paced or not."""

from __future__ import annotations

import threading
from concurrent import futures

import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from carbonspan.instrumentation.simulation.replay import OtlpGrpcSink, Replay, ReplaySettings
from carbonspan.processors import semconv
from carbonspan.processors.otlp import attributes_to_dict


class Receiver(trace_service_pb2_grpc.TraceServiceServicer, metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self) -> None:
        self.traces: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.metrics: list[metrics_service_pb2.ExportMetricsServiceRequest] = []
        self.lock = threading.Lock()

    def Export(self, request, context):  # noqa: N802 - the gRPC method name
        with self.lock:
            if isinstance(request, trace_service_pb2.ExportTraceServiceRequest):
                self.traces.append(request)
                return trace_service_pb2.ExportTraceServiceResponse()
            self.metrics.append(request)
            return metrics_service_pb2.ExportMetricsServiceResponse()


def test_replay_sends_spans_and_metrics_to_a_local_otlp_grpc_receiver():
    receiver = Receiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(receiver, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    sink = OtlpGrpcSink(f"127.0.0.1:{port}")
    try:
        replay = Replay(settings=ReplaySettings(requests=8, seed=2, tail_s=1.0))  # starts at wall-clock now
        slept = []
        finished = replay.run(sink, speed=1.0, sleep=slept.append)  # a sleep that does not sleep
    finally:
        sink.close()
        server.stop(grace=None)
    assert finished == 8
    # paced in real time: each 1-s batch waits until its simulated time has come on the wall clock
    assert len(slept) > 3 and all(0 < s for s in slept)
    assert slept[-1] - slept[0] > (len(slept) - 1) * 0.5
    spans = [s for r in receiver.traces for rs in r.resource_spans for ss in rs.scope_spans for s in ss.spans]
    roots = [s for s in spans if not s.parent_span_id]
    assert len(roots) == 8 and len({s.trace_id for s in spans}) == 8
    assert all(abs(s.start_time_unix_nano - replay.start_ns) < 3600 * 10**9 for s in spans)
    names = {m.name for r in receiver.metrics for rm in r.resource_metrics for sm in rm.scope_metrics
             for m in sm.metrics}
    assert {semconv.HW_ENERGY, semconv.HW_POWER, semconv.CARBON_WORKER_TOKENS,
            semconv.CARBON_WORKER_REQUEST_TIME} <= names
    hosts = {attributes_to_dict(rm.resource.attributes)[semconv.HOST_NAME]
             for r in receiver.metrics for rm in r.resource_metrics}
    assert hosts == {n.host for n in replay.fleet.nodes}
