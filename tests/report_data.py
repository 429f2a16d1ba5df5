"""Real enriched data for the report tests: a small fleet run through the carbon join and the roll-up.

Disaggregated requests prefill on 4 H100s in gcp/europe-north1 and decode on an A100 in
aws/us-east-1; one more request runs aggregated (prefill and decode) on an L40S in gcp/us-central1.
Each GPU draws constant power; the workers' token counters agree with their spans. The join is
asked for europe-north1 counterfactuals only, so the report must compute the other regions itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AggregationTemporality,
    Metric,
    NumberDataPoint,
    ResourceMetrics,
    Sum,
)
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans
from otlp_data import SECOND, T0, SpanSpec, energy_metrics, load_metrics, node_resource, ramp, resource, spans

from carbonspan.collector import otlp_json
from carbonspan.processors import semconv
from carbonspan.processors.facility import FacilityTables
from carbonspan.processors.intensity import StaticTableProvider
from carbonspan.processors.join import CarbonJoin, JoinSettings
from carbonspan.processors.otlp import set_attributes
from carbonspan.processors.rollup import RequestRollup

MS = 1_000_000
STEP = 100 * MS
H100, A100, L40S = "NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB", "NVIDIA L40S"
PREFILL_GPUS = ("h100-0", "h100-1", "h100-2", "h100-3")
DECODE_GPUS = ("a100-0",)
AGGREGATED_GPUS = ("l40s-0",)
PREFILL_RES = node_resource(PREFILL_GPUS, service="prefill", instance="p1", provider="gcp", region="europe-north1")
DECODE_RES = node_resource(DECODE_GPUS, service="decode", instance="d1", provider="aws", region="us-east-1")
AGGREGATED_RES = node_resource(AGGREGATED_GPUS, service="vllm", instance="v1", provider="gcp", region="us-central1")
ROUTER_RES = {semconv.SERVICE_NAME: "router", semconv.CLOUD_PROVIDER: "gcp", semconv.CLOUD_REGION: "europe-north1"}
#: the one region the join writes carbon.counterfactual.<region>.gco2e for.
JOIN_COUNTERFACTUALS = (("gcp", "europe-north1"),)
END = T0 + 12 * SECOND


@dataclass(frozen=True)
class Fleet:
    traces: list[ResourceSpans]  # enriched and rolled up
    metrics: list[ResourceMetrics]  # what the sampler and workers sent, and the join's carbon.gpu.* counters
    trace_ids: list[str]  # hex, disaggregated ones first


def counter(windows: list[tuple[int, int, float]]) -> list[tuple[int, float]]:
    """A worker's cumulative token counter for requests computing over [a, b] at an even rate."""
    times = sorted({*range(T0 - SECOND, END + 1, STEP), *(a for a, _, _ in windows), *(b for _, b, _ in windows)})
    return [(t, sum(n * min(max(t - a, 0), b - a) / (b - a) for a, b, n in windows)) for t in times]


def sampler(worker_res: dict) -> dict:
    """The resource of the GPU sampler on a worker's node."""
    keys = (semconv.HOST_NAME, semconv.CLOUD_PROVIDER, semconv.CLOUD_REGION)
    return {semconv.SERVICE_NAME: "carbonspan-sampler", **{k: worker_res[k] for k in keys}}


def ledger_metrics(join: CarbonJoin) -> ResourceMetrics:
    """The join's per-GPU accounts as the collector exports them: cumulative carbon.gpu.* sums."""
    rm = ResourceMetrics(resource=resource({semconv.SERVICE_NAME: "carbonspan-collector"}))
    scope = rm.scope_metrics.add()
    for name, field in ((semconv.METRIC_GPU_MEASURED_ENERGY, "measured_j"),
                        (semconv.METRIC_GPU_ATTRIBUTED_ENERGY, "attributed_j"),
                        (semconv.METRIC_GPU_IDLE_ENERGY, "idle_j")):
        points = []
        for row in join.gpu_ledger():
            point = NumberDataPoint(time_unix_nano=END, start_time_unix_nano=T0 - SECOND,
                                    as_double=getattr(row, field))
            set_attributes(point.attributes, {semconv.HW_ID: row.gpu_id, semconv.HW_MODEL: row.model or "",
                                              semconv.CLOUD_REGION: row.region or ""})
            points.append(point)
        scope.metrics.append(Metric(name=name, unit=semconv.UNIT_JOULE, sum=Sum(
            aggregation_temporality=AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE, is_monotonic=True,
            data_points=points)))
    return rm


def _request(start: int, prefill_tokens: int, decode_tokens: int, aggregated: bool):
    """Router root span + phase spans of one request: (trace id, {resource name: [SpanSpec]})."""
    trace, root = os.urandom(16), os.urandom(8)
    pre_a, pre_b = start + 100 * MS, start + 600 * MS
    dec_a, dec_b = start + 700 * MS, start + 2 * SECOND
    inputs = {semconv.GEN_AI_USAGE_INPUT_TOKENS: prefill_tokens}
    outputs = {semconv.GEN_AI_USAGE_OUTPUT_TOKENS: decode_tokens}
    router = [SpanSpec(None, start, dec_b + 50 * MS, trace_id=trace, span_id=root, name="POST /v1/completions")]
    first = [SpanSpec(semconv.PHASE_QUEUE, start, pre_a, trace_id=trace, parent_span_id=root),
             SpanSpec(semconv.PHASE_PREFILL, pre_a, pre_b, tokens=prefill_tokens, trace_id=trace,
                      parent_span_id=root, attributes=inputs)]
    second = [SpanSpec(semconv.PHASE_DECODE, dec_a, dec_b, tokens=decode_tokens, trace_id=trace, parent_span_id=root,
                       attributes=outputs)]
    if not aggregated:
        second.insert(0, SpanSpec(semconv.PHASE_KV_TRANSFER, pre_b, dec_a, trace_id=trace, parent_span_id=root,
                                  attributes={semconv.CARBON_KV_BYTES: 4 << 20}))
    return trace, router, first, second, ((pre_a, pre_b, prefill_tokens), (dec_a, dec_b, decode_tokens))


def build_fleet() -> Fleet:
    join = CarbonJoin(JoinSettings(counterfactual_regions=JOIN_COUNTERFACTUALS), StaticTableProvider(),
                      FacilityTables.default())
    power = [(PREFILL_RES, 350.0, H100), (DECODE_RES, 250.0, A100), (AGGREGATED_RES, 200.0, L40S)]
    metrics = [energy_metrics(gpu, ramp(T0 - SECOND, END, STEP, watts, base=5000.0), model=model, res=sampler(res))
               for res, watts, model in power for gpu in res[semconv.CARBON_GPU_IDS]]
    groups: dict[str, list] = {"router": [], "prefill": [], "decode": [], "aggregated": []}
    windows: dict[str, list] = {"prefill": [], "decode": [], "aggregated": []}
    trace_ids = []
    plan = [(T0, 512, 64, False), (T0 + 3 * SECOND, 2048, 128, False), (T0 + 6 * SECOND, 256, 32, True)]
    for start, prefill_tokens, decode_tokens, aggregated in plan:
        trace, router, first, second, (pre, dec) = _request(start, prefill_tokens, decode_tokens, aggregated)
        trace_ids.append(trace.hex())
        groups["router"] += router
        if aggregated:
            groups["aggregated"] += first + second
            windows["aggregated"] += [pre, dec]
        else:
            groups["prefill"] += first
            groups["decode"] += second
            windows["prefill"].append(pre)
            windows["decode"].append(dec)
    worker_res = {"prefill": PREFILL_RES, "decode": DECODE_RES, "aggregated": AGGREGATED_RES}
    for name, res in worker_res.items():
        phase = semconv.PHASE_DECODE if name == "decode" else semconv.PHASE_PREFILL
        metrics.append(load_metrics(res, counter(windows[name]), phase=phase))
    join.add_metrics(metrics)
    passed = join.add_spans([spans(ROUTER_RES, groups["router"])] + [spans(worker_res[n], groups[n])
                                                                      for n in worker_res], T0)
    rollup = RequestRollup()
    rollup.add(passed + join.release(END, flush=True), END)
    traces = rollup.release(END, flush=True).spans
    return Fleet(traces=traces, metrics=[*metrics, ledger_metrics(join)], trace_ids=trace_ids)


def write_otlp_lines(fleet: Fleet, path: Path, *, extra_lines: tuple[str, ...] = ()) -> Path:
    """The fleet as the file exporter writes it: one export request per line, metrics first."""
    lines = [otlp_json.dumps(ExportMetricsServiceRequest(resource_metrics=[rm])) for rm in fleet.metrics]
    lines += [otlp_json.dumps(ExportTraceServiceRequest(resource_spans=[rs])) for rs in fleet.traces]
    lines[1:1] = extra_lines
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
