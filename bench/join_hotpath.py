"""The carbon join and roll-up in-process: spans/s and memory, without sockets.

The collector's throughput can be no better than this; profile here first
(``python -m cProfile -s cumtime bench/join_hotpath.py --requests 5000``).

Workload: disaggregated requests of 4 spans (queue + prefill on a TP=4 prefill worker, kv_transfer
+ decode on a TP=2 decode worker), GPUs sampled at 10 Hz, worker counters at 10 Hz, all as OTLP
protobuf messages in batches of 512 spans as a collector receives them.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from otlp_data import SECOND, T0, SpanSpec, energy_metrics, load_metrics, node_resource, spans  # noqa: E402

from carbonspan.processors import semconv  # noqa: E402
from carbonspan.processors.facility import FacilityTables  # noqa: E402
from carbonspan.processors.intensity import StaticTableProvider  # noqa: E402
from carbonspan.processors.join import CarbonJoin, JoinSettings  # noqa: E402
from carbonspan.processors.rollup import RequestRollup, RollupSettings  # noqa: E402

MS = 1_000_000
PREFILL_GPUS = [f"GPU-prefill-{i}" for i in range(4)]
DECODE_GPUS = [f"GPU-decode-{i}" for i in range(2)]


def workload(requests: int, rate_per_s: float):
    """(metrics, span batches) for `requests` requests arriving at `rate_per_s`."""
    horizon = int(requests / rate_per_s * SECOND) + 5 * SECOND
    grid = range(T0 - SECOND, T0 + horizon, 100 * MS)
    metrics = [energy_metrics(g, [(t, 400.0 * (t - T0 + SECOND) / SECOND) for t in grid])
               for g in PREFILL_GPUS + DECODE_GPUS]
    prefill_res = node_resource(PREFILL_GPUS, service="prefill", instance="p", region="us-east-1")
    decode_res = node_resource(DECODE_GPUS, service="decode", instance="d", provider="gcp", region="europe-north1")
    metrics += [load_metrics(prefill_res, [(t, rate_per_s * 512 * (t - T0) / SECOND) for t in grid]),
                load_metrics(decode_res, [(t, rate_per_s * 128 * (t - T0) / SECOND) for t in grid],
                             phase=semconv.PHASE_DECODE)]
    batches = []
    prefill_specs, decode_specs = [], []
    for i in range(requests):
        start = T0 + int(i / rate_per_s * SECOND)
        trace, root = os.urandom(16), os.urandom(8)
        common = {semconv.GEN_AI_USAGE_INPUT_TOKENS: 512, semconv.GEN_AI_USAGE_OUTPUT_TOKENS: 128}
        prefill_specs += [
            SpanSpec(semconv.PHASE_QUEUE, start, start + 5 * MS, trace_id=trace, parent_span_id=root,
                     attributes=common),
            SpanSpec(semconv.PHASE_PREFILL, start + 5 * MS, start + 80 * MS, 512, trace_id=trace, parent_span_id=root,
                     attributes=common),
        ]
        decode_specs += [
            SpanSpec(semconv.PHASE_KV_TRANSFER, start + 80 * MS, start + 90 * MS, trace_id=trace, parent_span_id=root),
            SpanSpec(semconv.PHASE_DECODE, start + 90 * MS, start + 2 * SECOND, 128, trace_id=trace,
                     parent_span_id=root, attributes=common),
        ]
        if len(prefill_specs) >= 256:
            batches.append([spans(prefill_res, prefill_specs), spans(decode_res, decode_specs)])
            prefill_specs, decode_specs = [], []
    if prefill_specs:
        batches.append([spans(prefill_res, prefill_specs), spans(decode_res, decode_specs)])
    return metrics, batches, horizon


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=25_000, help="requests (4 spans each)")
    parser.add_argument("--rate", type=float, default=500.0, help="requests per second of data time")
    parser.add_argument("--hold", action="store_true", help="hold every span (no energy data) to measure memory")
    args = parser.parse_args()

    metrics, batches, horizon = workload(args.requests, args.rate)
    n_spans = sum(len(ss.spans) for batch in batches for rs in batch for ss in rs.scope_spans)
    join = CarbonJoin(JoinSettings(deadline_ns=3600 * SECOND), StaticTableProvider(), FacilityTables.default())
    rollup = RequestRollup(RollupSettings(settle_ns=0))
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started, cpu_started = time.perf_counter(), time.process_time()
    if not args.hold:
        join.add_metrics(metrics)
    out = 0
    for i, batch in enumerate(batches):
        now = T0 + int(i * 256 / args.rate * SECOND)
        join.add_spans(batch, now)
        figures: dict = {}  # as in the collector, where the roll-up comes right after the join
        released = join.release(now, figures=figures)
        rollup.add(released, now, figures)
        out += sum(len(ss.spans) for rs in rollup.release(now).spans for ss in rs.scope_spans)
    held = join.pending_spans
    rss_held = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rollup.add(join.release(T0 + horizon, flush=True), T0 + horizon)
    out += sum(len(ss.spans) for rs in rollup.release(T0 + horizon, flush=True).spans for ss in rs.scope_spans)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    assert out == n_spans, (out, n_spans)
    print(f"spans: {n_spans}  elapsed: {elapsed:.2f} s  throughput: {n_spans / elapsed:,.0f} spans/s, "
          f"{n_spans / cpu:,.0f} spans per CPU-second (join + roll-up, one core)")
    print(f"spans held at peak: {held}  max RSS: {rss_held / 1024:.0f} MB (before spans: {rss_before / 1024:.0f} MB)")


if __name__ == "__main__":
    main()
