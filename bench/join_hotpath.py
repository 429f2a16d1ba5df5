"""The carbon join and roll-up in-process: spans per CPU-second and memory, without sockets.

The collector's throughput can be no better than this; profile here first
(``python -m cProfile -s cumtime bench/join_hotpath.py --requests 5000``).

Workload: the one ``collector_throughput.py`` sends (a router root span plus queue + prefill on a
TP=4 prefill worker and kv_transfer + decode on a TP=2 decode worker, GPUs sampled at 10 Hz, worker
counters at 10 Hz, batches of up to 512 spans), parsed from the same OTLP bytes and handed to the
join and the roll-up as the collector's pipeline does, with the join's figures.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from collector_throughput import METRICS_METHOD, SECOND, workload  # noqa: E402

from carbonspan.collector.collector_cli import tune_gc  # noqa: E402
from carbonspan.collector.service import TICK_S  # noqa: E402
from carbonspan.processors.facility import FacilityTables  # noqa: E402
from carbonspan.processors.intensity import StaticTableProvider  # noqa: E402
from carbonspan.processors.join import CarbonJoin, JoinSettings  # noqa: E402
from carbonspan.processors.rollup import RequestRollup, RollupSettings  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=25_000, help="requests (5 spans each)")
    parser.add_argument("--rate", type=float, default=500.0, help="requests per second of data time")
    parser.add_argument("--hold", action="store_true", help="hold every span (no energy data) to measure memory")
    args = parser.parse_args()

    start_ns = time.time_ns()
    work = workload(args.requests, args.rate, start_ns, metrics=not args.hold)
    join = CarbonJoin(JoinSettings(deadline_ns=3600 * SECOND), StaticTableProvider(), FacilityTables.default())
    rollup = RequestRollup(RollupSettings(settle_ns=0))
    tune_gc()  # as the collector does once started
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started, cpu_started = time.perf_counter(), time.process_time()
    out = 0
    next_tick = 0
    figures: dict = {}  # as in the collector, where the roll-up comes right after the join
    stages: dict[str, float] = {}  # CPU-seconds by step

    def timed(step: str, fn, *a, **kw):
        cpu = time.process_time()
        result = fn(*a, **kw)
        stages[step] = stages.get(step, 0.0) + time.process_time() - cpu
        return result

    for method, body in work.requests:
        now = time.time_ns()
        if method == METRICS_METHOD:
            timed("metrics: parse + join.add_metrics", lambda b: join.add_metrics(
                ExportMetricsServiceRequest.FromString(b).resource_metrics), body)
        else:
            batch = timed("spans: parse", lambda b: list(ExportTraceServiceRequest.FromString(b).resource_spans),
                          body)
            timed("roll-up add (spans handed on at once)", rollup.add,
                  timed("join add_spans", join.add_spans, batch, now, figures), now, figures)
            figures.clear()
        if now >= next_tick:  # the collector's ticker
            next_tick = now + TICK_S * SECOND
            timed("roll-up add (spans released)", rollup.add, timed("join release", join.release, now,
                                                                        figures=figures), now, figures)
            figures.clear()
            out += sum(len(ss.spans) for rs in timed("roll-up release", rollup.release, now).spans
                       for ss in rs.scope_spans)
    held = join.pending_spans
    rss_held = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    end = time.time_ns() + 3600 * SECOND
    rollup.add(join.release(end, flush=True), end)
    out += sum(len(ss.spans) for rs in rollup.release(end, flush=True).spans for ss in rs.scope_spans)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    assert out == work.spans, (out, work.spans)
    print(f"spans: {work.spans}  elapsed: {elapsed:.2f} s  throughput: {work.spans / elapsed:,.0f} spans/s, "
          f"{work.spans / cpu:,.0f} spans per CPU-second (parse + join + roll-up, one core)")
    for step, seconds in stages.items():
        print(f"  {step:40s} {seconds / work.spans * 1e6:6.2f} us a span")
    print(f"spans held at peak: {held}  max RSS: {rss_held / 1024:.0f} MB (before spans: {rss_before / 1024:.0f} MB)")


if __name__ == "__main__":
    main()
