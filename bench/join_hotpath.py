"""The collector's carbon stages in-process: spans per CPU-second and CPU per step, without sockets.

The collector's throughput can be no better than this; profile here first
(``python -m cProfile -s tottime bench/join_hotpath.py --requests 5000``).

Workload: the one ``collector_throughput.py`` sends (a router root span plus queue + prefill on a
TP=4 prefill worker and kv_transfer + decode on a TP=2 decode worker, GPUs sampled at 10 Hz, worker
counters at 10 Hz, batches of up to 512 spans), parsed from the same OTLP bytes and handed to the
stages the collector builds for ``carbon, carbon_rollup``: the join, the roll-up with the join's
figures, the per-request histograms, and the exporter's encoding of what comes out.

Deterministic on purpose: a data clock (1 ms per OTLP request) instead of the wall clock, and a
release every ``--release-every`` trace requests (about the collector's 100 ms tick at the
collector bench's rate), so that the instructions a span costs can be counted; this VM's timings
drift by 20 % within minutes, instruction counts by well under 1 %:

    python bench/join_hotpath.py --requests 2000 --workload /tmp/w2000   # builds and keeps the OTLP bytes
    python bench/join_hotpath.py --requests 6000 --workload /tmp/w6000
    valgrind --tool=callgrind python bench/join_hotpath.py --requests 2000 --workload /tmp/w2000
    valgrind --tool=callgrind python bench/join_hotpath.py --requests 6000 --workload /tmp/w6000
    # instructions per span: (second total - first total) / (second's spans - first's spans)
"""

from __future__ import annotations

import argparse
import pickle
import resource
import sys
import time
from pathlib import Path

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from collector_throughput import METRICS_METHOD, SECOND, workload  # noqa: E402

from carbonspan.collector.collector_cli import tune_gc  # noqa: E402
from carbonspan.collector.exporters.remote import encode_trace_batch  # noqa: E402
from carbonspan.collector.pipeline import Router  # noqa: E402
from carbonspan.collector.pipeline_settings import CarbonSettings  # noqa: E402
from carbonspan.collector.pipeline_stages import CarbonStage, RollupStage, span_count  # noqa: E402
from carbonspan.collector.self_metrics import CollectorMetrics  # noqa: E402
from carbonspan.processors.facility import FacilityTables  # noqa: E402
from carbonspan.processors.intensity import StaticTableProvider  # noqa: E402
from carbonspan.processors.join import JoinSettings  # noqa: E402
from carbonspan.processors.rollup import RollupSettings  # noqa: E402

START_NS = 1_800_000_000 * SECOND  # the data clock's origin: any fixed time
MS = 1_000_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=25_000, help="requests (5 spans each)")
    parser.add_argument("--rate", type=float, default=500.0, help="requests per second of data time")
    parser.add_argument("--release-every", type=int, default=5, metavar="N",
                        help="trace requests between two releases (the collector's tick)")
    parser.add_argument("--hold", action="store_true", help="hold every span (no energy data) to measure memory")
    parser.add_argument("--workload", type=Path, metavar="FILE",
                        help="keep the workload's OTLP bytes here, or read them from here if it exists (building "
                             "them costs more than processing them: leave it out of what callgrind counts)")
    args = parser.parse_args()

    if args.workload is not None and args.workload.exists():
        work = pickle.loads(args.workload.read_bytes())
    else:
        work = workload(args.requests, args.rate, START_NS, metrics=not args.hold)
        if args.workload is not None:
            args.workload.write_bytes(pickle.dumps(work))
    carbon = CarbonStage("carbon", CarbonSettings(JoinSettings(deadline_ns=3600 * SECOND), {}, {}),
                         StaticTableProvider(), FacilityTables.default())
    metrics = CollectorMetrics(Router([], time.time_ns), [carbon], [], {})
    rollup = RollupStage("carbon_rollup", RollupSettings(settle_ns=0), metrics.record_request, after=carbon)
    tune_gc()  # as the collector does once started
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started, cpu_started = time.perf_counter(), time.process_time()
    stages: dict[str, float] = {}  # CPU-seconds by step
    out = 0

    def timed(step: str, fn, *a, **kw):
        cpu = time.process_time()
        result = fn(*a, **kw)
        stages[step] = stages.get(step, 0.0) + time.process_time() - cpu
        return result

    def release(now: int, flush: bool = False) -> int:
        """The collector's tick: the join's release through the roll-up, the roll-up's release encoded."""
        timed("roll-up add (spans released)", rollup.traces, timed("join release", carbon.release_traces, now, flush),
              now)
        spans = timed("roll-up release + request histograms", rollup.release_traces, now, flush)
        timed("export encoding", encode_trace_batch, spans)
        return span_count(spans)

    now = START_NS
    trace_requests = 0
    for method, body in work.requests:
        now += MS
        if method == METRICS_METHOD:
            timed("metrics: parse + join.add_metrics", lambda b, t: carbon.metrics(
                list(ExportMetricsServiceRequest.FromString(b).resource_metrics), t), body, now)
            continue
        batch = timed("spans: parse", lambda b: list(ExportTraceServiceRequest.FromString(b).resource_spans), body)
        timed("roll-up add (spans handed on at once)", rollup.traces,
              timed("join add_spans", carbon.traces, batch, now), now)
        trace_requests += 1
        if trace_requests % args.release_every == 0:
            out += release(now)
    held = carbon.pending_spans
    rss_held = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out += release(now + 3600 * SECOND, flush=True)
    timed("metrics collection", metrics.collect)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    assert out == work.spans, (out, work.spans)
    print(f"spans: {work.spans}  elapsed: {elapsed:.2f} s  throughput: {work.spans / elapsed:,.0f} spans/s, "
          f"{work.spans / cpu:,.0f} spans per CPU-second (parse + carbon stages + export encoding, one core)")
    for step, seconds in stages.items():
        print(f"  {step:40s} {seconds / work.spans * 1e6:6.2f} us a span")
    print(f"spans held at peak: {held}  max RSS: {rss_held / 1024:.0f} MB (before spans: {rss_before / 1024:.0f} MB)")


if __name__ == "__main__":
    main()
