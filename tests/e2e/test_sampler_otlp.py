"""Acceptance: simulated GPUs -> the sampler -> TimestampedMetricBatcher -> real OTLP (HTTP/protobuf,
the sampler's default, and gRPC) -> a receiver on 127.0.0.1 -> the collector's Telemetry; the energy
it reads over [a, b] matches the simulator's ground truth within 0.5 %. Runs on a simulated clock
(60 s of GPU time in well under a second) with a real network hop at every 1 s export."""

import random
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import pytest
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from sampler_doubles import Clock

from carbonspan.instrumentation.otlp_push import (
    PROTOCOL_GRPC,
    PROTOCOL_HTTP_PROTOBUF,
    OtlpMetricsSender,
    TimestampedMetricBatcher,
)
from carbonspan.instrumentation.power.sampler import SCOPE_NAME, PowerSampler
from carbonspan.instrumentation.power.simulated import SimulatedGpu, SimulatedPowerSource
from carbonspan.processors import semconv
from carbonspan.processors.otlp import attributes_to_dict
from carbonspan.processors.telemetry import Telemetry

MS = 1_000_000
S = 1_000_000_000
T0 = 1_700_000_000 * S


class GrpcReceiver(metrics_service_pb2_grpc.MetricsServiceServicer):
    protocol = PROTOCOL_GRPC

    def __init__(self, port: int = 0) -> None:
        self.requests = []
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(self, self.server)
        self.port = self.server.add_insecure_port(f"127.0.0.1:{port}")
        self.server.start()

    def Export(self, request, context):  # noqa: N802 - the gRPC method name
        self.requests.append(request)
        return metrics_service_pb2.ExportMetricsServiceResponse()

    def stop(self) -> None:
        self.server.stop(grace=None).wait()

    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class HttpReceiver:
    """OTLP/HTTP: POST /v1/metrics with a protobuf body, answered with a protobuf response."""

    protocol = PROTOCOL_HTTP_PROTOBUF

    def __init__(self, port: int = 0) -> None:
        self.requests = []
        self.status = 200  # what it answers; anything else and it keeps nothing
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802 - the http.server method name
                request = metrics_service_pb2.ExportMetricsServiceRequest()
                request.ParseFromString(self.rfile.read(int(self.headers["Content-Length"])))
                if receiver.status == 200:
                    receiver.requests.append(request)
                body = metrics_service_pb2.ExportMetricsServiceResponse().SerializeToString()
                self.send_response(receiver.status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join()

    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/metrics"


@pytest.fixture(params=[HttpReceiver, GrpcReceiver], ids=["http", "grpc"])
def receiver(request):
    r = request.param()
    yield r
    r.stop()



def run_node(receiver, clock, gpus, seconds, region="eu-north-1"):
    rng = random.Random(7)
    for gpu in gpus:  # a load that changes every 250 ms, between idle and full
        if gpu._power_fn is None:
            for k in range(seconds * 4 + 8):
                gpu.set_utilization(rng.choice([0.0, 0.2, 0.6, 1.0]), at_ns=T0 + k * 250 * MS)
    sender = OtlpMetricsSender(receiver.endpoint(), receiver.protocol)
    batcher = TimestampedMetricBatcher({semconv.CLOUD_REGION: region}, SCOPE_NAME, sender)
    sampler = PowerSampler(SimulatedPowerSource(gpus, clock), batcher, interval_s=0.1, clock=clock)
    per_second = S // sampler.poll_ns
    for slot in range(seconds * per_second + 1):  # ticks every 100 ms, the default energy polls between
        clock.t = T0 + slot * sampler.poll_ns
        sampler.step(slot)
        if slot % per_second == 0:
            assert batcher.flush()
    sender.close()
    return sampler


def test_energy_received_over_otlp_matches_ground_truth(receiver):
    clock = Clock(T0)
    counter_gpu = SimulatedGpu("H100 SXM", "GPU-counter", clock=clock)
    power_gpu = SimulatedGpu("A100 SXM", "GPU-power", clock=clock, has_energy_counter=False)
    sampler = run_node(receiver, clock, [counter_gpu, power_gpu], seconds=60)

    assert len(receiver.requests) == 61
    request = receiver.requests[30]
    (rm,) = request.resource_metrics
    assert attributes_to_dict(rm.resource.attributes)[semconv.CLOUD_REGION] == "eu-north-1"
    metrics = {m.name: m for m in rm.scope_metrics[0].metrics}
    assert len(metrics[semconv.HW_POWER].gauge.data_points) == 20  # ten timestamped points per GPU
    energy = metrics[semconv.HW_ENERGY].sum
    assert energy.is_monotonic
    by_gpu = {}
    for p in energy.data_points:
        by_gpu.setdefault(attributes_to_dict(p.attributes)[semconv.HW_ID], []).append(p.time_unix_nano)
    # The power-only GPU: a point per tick. The counter GPU (updates every 100 ms, on the ticks):
    # one point per update, placed between the poll before it and the read that saw it.
    assert len(by_gpu["GPU-power"]) == 10
    placed = 100 * MS - sampler.poll_ns // 2  # the midpoint of the last poll before the tick and the tick
    assert sampler.poll_ns < 100 * MS
    assert len(by_gpu["GPU-counter"]) == 10 and all(t % (100 * MS) == placed for t in by_gpu["GPU-counter"])

    telemetry = Telemetry(retention_ns=3600 * S)
    for r in receiver.requests:
        stats = telemetry.add(r.resource_metrics)
        assert stats.rejected == 0, stats.errors
    for gpu in (counter_gpu, power_gpu):
        info = telemetry.gpus[gpu.uuid]
        assert info.model == gpu.profile.model and info.region == "eu-north-1"
        for a, b in [(T0 + 7_330 * MS, T0 + 52_710 * MS), (T0 + 12 * S, T0 + 42_050 * MS)]:
            measured = info.series.increase(a, b)
            assert measured == pytest.approx(gpu.true_energy_j(a, b), rel=0.005), gpu.uuid


def test_exporter_outage_buffers_and_resends(receiver):
    port, endpoint = receiver.port, receiver.endpoint()
    receiver.stop()
    clock = Clock(T0)
    gpu = SimulatedGpu("L4", "GPU-outage", clock=clock)
    sender = OtlpMetricsSender(endpoint, receiver.protocol, timeout_s=2)
    batcher = TimestampedMetricBatcher({}, SCOPE_NAME, sender)
    sampler = PowerSampler(SimulatedPowerSource([gpu], clock), batcher, clock=clock, energy_poll_s=None)
    for tick in range(30):
        clock.t = T0 + tick * 100 * MS
        sampler.sample_once()
    assert not batcher.flush() and batcher.buffered_points == 60

    revived = type(receiver)(port)
    try:
        deadline = time.monotonic() + 20  # the channel reconnects with gRPC's backoff
        while not batcher.flush() and time.monotonic() < deadline:
            time.sleep(0.2)
        points = [
            p
            for r in revived.requests
            for m in r.resource_metrics[0].scope_metrics[0].metrics
            if m.name == semconv.HW_ENERGY
            for p in m.sum.data_points
        ]
        assert [p.time_unix_nano for p in points] == [T0 + k * 100 * MS for k in range(30)]
    finally:
        revived.stop()
        sender.close()


def test_http_error_status_keeps_the_points():
    receiver = HttpReceiver()
    try:
        receiver.status = 503
        clock = Clock(T0)
        sender = OtlpMetricsSender(receiver.endpoint(), PROTOCOL_HTTP_PROTOBUF, timeout_s=2)
        batcher = TimestampedMetricBatcher({}, SCOPE_NAME, sender)
        sampler = PowerSampler(SimulatedPowerSource([SimulatedGpu("L4", "GPU-503", clock=clock)], clock), batcher,
                               clock=clock, energy_poll_s=None)
        for tick in range(5):
            clock.t = T0 + tick * 100 * MS
            sampler.sample_once()
        assert not batcher.flush() and batcher.buffered_points == 10 and receiver.requests == []
        receiver.status = 200
        assert batcher.flush() and batcher.buffered_points == 0 and batcher.sent_points == 10
        assert len(receiver.requests) == 1
        sender.close()
    finally:
        receiver.stop()


def test_sampler_command_sends_over_http_by_default(capsys, monkeypatch):
    from carbonspan.collector.cli import main

    for name in ("PROTOCOL", "METRICS_PROTOCOL", "ENDPOINT", "METRICS_ENDPOINT"):
        monkeypatch.delenv(f"OTEL_EXPORTER_OTLP_{name}", raising=False)
    receiver = HttpReceiver()
    try:
        assert main(["sampler", "--simulate", "L4", "--interval", "0.05", "--duration", "0.3",
                     "--endpoint", f"http://127.0.0.1:{receiver.port}"]) == 0
        assert "(http/protobuf)" in capsys.readouterr().err
        assert receiver.requests  # at least the flush at stop
    finally:
        receiver.stop()


def test_sampler_command_console_output(capsys):
    from carbonspan.collector.cli import main

    assert main(["sampler", "--simulate", "L4 x2", "--console", "--interval", "0.05", "--duration", "0.3",
                 "--region", "us-west-2", "--host-name", "node-9"]) == 0
    out, err = capsys.readouterr()
    assert "sampling GPU 1: L4" in err
    assert '"hw.energy"' in out and '"us-west-2"' in out and '"node-9"' in out


def test_sampler_command_energy_polls_can_be_turned_off_and_bad_periods_are_refused(capsys):
    from carbonspan.collector.cli import main

    assert main(["sampler", "--simulate", "L4", "--console", "--duration", "0.25"]) == 0
    assert "energy counters polled every 0.05 s" in capsys.readouterr().err
    assert main(["sampler", "--simulate", "L4", "--console", "--energy-poll", "0", "--duration", "0.25"]) == 0
    assert "energy counters read at the samples only" in capsys.readouterr().err
    for bad in (["--energy-poll", "-1"], ["--interval", "0"], ["--export-interval", "soon"]):
        with pytest.raises(SystemExit) as exit_info:
            main(["sampler", "--simulate", "L4", "--console", *bad])
        assert exit_info.value.code == 2
        assert bad[0] in capsys.readouterr().err


def test_no_gpu_message_suggests_simulate(capsys, monkeypatch):
    from carbonspan.collector.cli import main
    from carbonspan.instrumentation.power import sampler
    from carbonspan.instrumentation.power.source import SourceError

    def no_gpus(clock=None):
        raise SourceError("no GPU found (test). carbonspan sampler --simulate 'H100 SXM x4'")

    monkeypatch.setattr(sampler, "detect_source", no_gpus)
    assert main(["sampler", "--console"]) == 2
    assert "--simulate" in capsys.readouterr().err

