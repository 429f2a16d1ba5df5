"""What the join hands on besides the spans, and the shortcuts it takes doing so: the roll-up right
after it takes its figures in-process instead of reading back the attributes it wrote (summaries and
spans must be the same either way); the per-span counters get sums per label set; attributes are
appended unless the span already carries carbon attributes, which are then replaced."""

from __future__ import annotations

import dataclasses

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans
from otlp_data import SECOND, T0, SpanSpec, energy_metrics, load_metrics, node_resource, ramp, spans

from carbonspan.processors import semconv
from carbonspan.processors.facility import FacilityTables
from carbonspan.processors.intensity import StaticTableProvider
from carbonspan.processors.join import CarbonJoin, JoinSettings
from carbonspan.processors.otlp import attributes_to_dict
from carbonspan.processors.rollup import RequestRollup, RollupSettings

MS = 1_000_000
PREFILL = ["GPU-p0", "GPU-p1"]
DECODE = ["GPU-d0"]


def _run(use_figures: bool, join: CarbonJoin | None = None, stale: bool = False, rootless: bool = False):
    """Six disaggregated requests through the join and the roll-up. ``stale``: the worker spans
    arrive with figures of an earlier pass; ``rootless``: no router span, and the queue span, the
    summary's carrier then, arrives with an earlier summary."""
    join = join or CarbonJoin(JoinSettings(), StaticTableProvider(), FacilityTables.default())
    rollup = RequestRollup(RollupSettings(settle_ns=0, idle_timeout_ns=0))
    prefill_res = node_resource(PREFILL, service="prefill", instance="p", region="us-east-1")
    decode_res = node_resource(DECODE, service="decode", instance="d", provider="gcp", region="europe-north1")
    join.add_metrics([energy_metrics(g, ramp(T0 - SECOND, T0 + 10 * SECOND, 100 * MS, 300.0)) for g in PREFILL + DECODE]
                     + [load_metrics(prefill_res, ramp(T0 - SECOND, T0 + 10 * SECOND, 100 * MS, 5000.0)),
                        load_metrics(decode_res, ramp(T0 - SECOND, T0 + 10 * SECOND, 100 * MS, 900.0),
                                     phase=semconv.PHASE_DECODE)])
    model = {**({semconv.CARBON_ENERGY_JOULES: -1.0, semconv.CARBON_QUALITY: "stale"} if stale else {}),
             semconv.GEN_AI_USAGE_INPUT_TOKENS: 512,
             semconv.GEN_AI_USAGE_OUTPUT_TOKENS: 64}
    batch, prefill_specs, decode_specs, router_specs = [], [], [], []
    for i in range(6):
        trace, root = bytes([i + 1]) * 16, bytes([i + 1]) * 8
        start = T0 + i * 300 * MS
        router_specs.append(SpanSpec(None, start, start + 3 * SECOND, trace_id=trace, span_id=root, name="POST"))
        prefill_specs += [
            SpanSpec(semconv.PHASE_QUEUE, start, start + 5 * MS, trace_id=trace, parent_span_id=root,
                     attributes={semconv.CARBON_REQUEST_TOTAL_GCO2E: -1.0} if rootless else {}),
            SpanSpec(semconv.PHASE_PREFILL, start + 5 * MS, start + 90 * MS, 512, trace_id=trace,
                     parent_span_id=root, attributes=model)]
        decode_specs += [
            SpanSpec(semconv.PHASE_KV_TRANSFER, start + 90 * MS, start + 99 * MS, trace_id=trace, parent_span_id=root,
                     attributes={semconv.CARBON_KV_BYTES: 1 << 20}),
            SpanSpec(semconv.PHASE_DECODE, start + 99 * MS, start + 2 * SECOND, 64, trace_id=trace,
                     parent_span_id=root, attributes=model)]
    router_res = {semconv.SERVICE_NAME: "router", semconv.CLOUD_REGION: "us-east-1"}
    batch = [spans(router_res, router_specs)] * (not rootless) + [spans(prefill_res, _ids(prefill_specs, 1)),
                                                                  spans(decode_res, _ids(decode_specs, 2))]
    figures: list | None = [] if use_figures else None
    passed = join.add_spans(batch, T0, figures=figures)
    if use_figures:
        # one per span passed on: the queue and kv_transfer spans go on at once, the routers' roots untouched
        assert len(figures) == 12 + 6 * (not rootless) and sum(f is not None for f in figures) == 12
    rollup.add(passed, T0, figures)
    if use_figures:
        figures.clear()  # read, as the collector's roll-up stage does
    released = join.release(T0 + 20 * SECOND, figures=figures)
    if use_figures:
        assert len(figures) == 12 and None not in figures  # the prefill and decode spans, priced
    rollup.add(released, T0 + 20 * SECOND, figures)
    out = rollup.release(T0 + 20 * SECOND)
    return out.requests, [rs.SerializeToString() for rs in out.spans]


def _ids(specs: list[SpanSpec], node: int) -> list[SpanSpec]:
    """Span ids that are the same in both runs (the builder draws random ones)."""
    return [dataclasses.replace(spec, span_id=bytes([0xA0 + node, n]) * 4) for n, spec in enumerate(specs)]


def test_summaries_and_spans_are_the_same_with_the_joins_figures_as_without():
    summaries, out = _run(use_figures=True)
    assert len(summaries) == 6
    assert all(s.energy_j > 0 and s.total_g > 0 and s.input_tokens == 512 and s.output_tokens == 64
               and s.model and s.quality for s in summaries)
    assert (summaries, out) == _run(use_figures=False)


@pytest.mark.parametrize("case", [{"stale": True}, {"rootless": True}])
def test_spans_that_arrive_with_carbon_attributes_get_them_replaced_and_the_same_figures(case):
    summaries, out = _run(use_figures=True, **case)
    assert (summaries, out) == _run(use_figures=False, **case)
    assert [dataclasses.replace(s, service_name=None, span_count=0) for s in summaries] == [
        dataclasses.replace(s, service_name=None, span_count=0) for s in _run(use_figures=True)[0]]
    carriers = [attributes_to_dict(span.attributes)[semconv.CARBON_REQUEST_TOTAL_GCO2E] for rs in out
                for ss in ResourceSpans.FromString(rs).scope_spans for span in ss.spans
                if semconv.CARBON_REQUEST_TOTAL_GCO2E in attributes_to_dict(span.attributes)]
    assert len(carriers) == 6 and all(total > 0 for total in carriers)
    for rs in out:
        for ss in ResourceSpans.FromString(rs).scope_spans:
            for span in ss.spans:
                keys = [kv.key for kv in span.attributes]
                assert len(keys) == len(set(keys))
                attrs = attributes_to_dict(span.attributes)
                assert attrs.get(semconv.CARBON_QUALITY) != "stale"
                assert attrs.get(semconv.CARBON_ENERGY_JOULES, 0.0) >= 0.0


def test_per_span_counters_get_one_sum_per_label_set():
    join = CarbonJoin(JoinSettings(), StaticTableProvider(), FacilityTables.default())
    summaries, _ = _run(use_figures=True, join=join)
    observations = join.span_observations()
    assert sorted((o.phase, o.service_name) for o in observations) == [
        (semconv.PHASE_DECODE, "decode"), (semconv.PHASE_PREFILL, "prefill")]
    assert sum(o.energy_j for o in observations) == pytest.approx(sum(s.energy_j for s in summaries))
    assert sum(o.co2e_g for o in observations) == pytest.approx(sum(s.total_g for s in summaries))
    assert {o.phase: o.tokens for o in observations} == {semconv.PHASE_PREFILL: 6 * 512, semconv.PHASE_DECODE: 6 * 64}
    assert join.span_observations() == []  # drained


def test_the_rollup_refuses_figures_that_do_not_line_up_with_the_spans():
    """The figures go by position: one too many means they came from other messages."""
    rollup = RequestRollup(RollupSettings(settle_ns=0, idle_timeout_ns=0))
    batch = [spans({semconv.SERVICE_NAME: "router"}, [SpanSpec(None, T0, T0 + SECOND, name="POST")])]
    with pytest.raises(ValueError, match="more figures than spans"):
        rollup.add(batch, T0, [None, None])
