"""The request roll-up: totals of a disaggregated request's spans on its root span."""

from __future__ import annotations

import os
import random

import pytest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span
from otlp_data import SECOND, T0, SpanSpec, all_spans, spans

from carbonspan.processors import semconv
from carbonspan.processors.otlp import attributes_to_dict, python_to_any_value
from carbonspan.processors.rollup import RequestRollup, RollupSettings


def priced(phase: str, start: int, end: int, trace: bytes, parent: bytes, energy: float, op: float, emb: float,
           quality: str = semconv.QUALITY_MEASURED, **attrs) -> SpanSpec:
    return SpanSpec(phase, start, end, trace_id=trace, parent_span_id=parent, attributes={
        semconv.CARBON_ENERGY_JOULES: energy, semconv.CARBON_OPERATIONAL_GCO2E: op,
        semconv.CARBON_EMBODIED_GCO2E: emb, semconv.CARBON_TOTAL_GCO2E: op + emb, semconv.CARBON_QUALITY: quality,
        **attrs})


def disaggregated_request():
    trace, root_id = os.urandom(16), os.urandom(8)
    router = spans({semconv.SERVICE_NAME: "router"}, [SpanSpec(None, T0, T0 + 3 * SECOND, trace_id=trace,
                                                               span_id=root_id, name="POST /v1/completions")])
    prefill = spans({semconv.SERVICE_NAME: "prefill", semconv.CLOUD_REGION: "eu-north-1"}, [
        priced(semconv.PHASE_QUEUE, T0, T0 + 100, trace, root_id, 0.0, 0.0, 0.0),
        priced(semconv.PHASE_PREFILL, T0 + 100, T0 + SECOND, trace, root_id, 400.0, 0.002, 0.01,
               **{semconv.GEN_AI_USAGE_INPUT_TOKENS: 512}),
    ])
    decode = spans({semconv.SERVICE_NAME: "decode", semconv.CLOUD_REGION: "us-east-1"}, [
        priced(semconv.PHASE_KV_TRANSFER, T0 + SECOND, T0 + SECOND + 50, trace, root_id, 0.0, 0.0, 0.0),
        priced(semconv.PHASE_DECODE, T0 + SECOND + 50, T0 + 3 * SECOND, trace, root_id, 600.0, 0.07, 0.02,
               semconv.QUALITY_INTERPOLATED, **{semconv.GEN_AI_USAGE_OUTPUT_TOKENS: 128}),
    ])
    return trace, router, prefill, decode


def test_root_span_carries_the_request_totals_by_phase_and_region():
    rollup = RequestRollup(RollupSettings(settle_ns=2 * SECOND))
    trace, router, prefill, decode = disaggregated_request()
    rollup.add([router], T0)  # the router's span comes first: it needs no energy data
    rollup.add([prefill, decode], T0 + SECOND)
    early = rollup.release(T0 + 2 * SECOND)
    assert early.requests == []  # not settled yet
    # the children came after the root: they cannot carry the summary, so they go on at once, unchanged
    assert sorted(s.name for _, s in all_spans(early.spans)) == sorted(
        [semconv.PHASE_QUEUE, semconv.PHASE_PREFILL, semconv.PHASE_KV_TRANSFER, semconv.PHASE_DECODE])
    out = rollup.release(T0 + 3 * SECOND)
    (summary,) = out.requests
    root = next(attributes_to_dict(s.attributes) for _, s in all_spans(out.spans) if not s.parent_span_id)
    assert root[semconv.CARBON_REQUEST_ENERGY_JOULES] == pytest.approx(1000.0)
    assert root[semconv.CARBON_REQUEST_OPERATIONAL_GCO2E] == pytest.approx(0.072)
    assert root[semconv.CARBON_REQUEST_EMBODIED_GCO2E] == pytest.approx(0.03)
    assert root[semconv.CARBON_REQUEST_TOTAL_GCO2E] == pytest.approx(0.102)
    assert root[semconv.CARBON_REQUEST_SPAN_COUNT] == 5
    assert root[semconv.request_phase_gco2e(semconv.PHASE_PREFILL)] == pytest.approx(0.012)
    assert root[semconv.request_phase_gco2e(semconv.PHASE_DECODE)] == pytest.approx(0.09)
    assert root[semconv.request_phase_energy(semconv.PHASE_DECODE)] == pytest.approx(600.0)
    assert root[semconv.request_region_gco2e("eu-north-1")] == pytest.approx(0.012)
    assert root[semconv.request_region_gco2e("us-east-1")] == pytest.approx(0.09)
    assert root[semconv.CARBON_REQUEST_QUALITY] == semconv.QUALITY_INTERPOLATED
    assert root[semconv.CARBON_REQUEST_ROUTE] == "prefill@eu-north-1>decode@us-east-1"
    assert summary.trace_id == trace and summary.service_name == "router" and summary.model == "tiny-llama"
    assert (summary.input_tokens, summary.output_tokens) == (512, 128)
    assert len(all_spans(early.spans)) + len(all_spans(out.spans)) == 5


@pytest.mark.parametrize("stale", [
    {semconv.CARBON_REQUEST_TOTAL_GCO2E: -1.0, semconv.CARBON_REQUEST_ROUTE: "old"},  # rolled up once before
    {semconv.GEN_AI_REQUEST_MODEL: None},  # the model's key without a value
])
def test_a_root_that_carries_the_summarys_keys_gets_them_replaced_not_repeated(stale):
    rollup = RequestRollup(RollupSettings(settle_ns=0))
    trace, router, prefill, decode = disaggregated_request()
    root = router.scope_spans[0].spans[0]
    root.attributes.extend([KeyValue(key=key, value=python_to_any_value(value)) for key, value in stale.items()])
    rollup.add([router, prefill, decode], T0)
    out = rollup.release(T0)
    root = next(s for _, s in all_spans(out.spans) if not s.parent_span_id)
    keys = [kv.key for kv in root.attributes]
    assert len(keys) == len(set(keys))
    attrs = attributes_to_dict(root.attributes)
    assert attrs[semconv.CARBON_REQUEST_TOTAL_GCO2E] == pytest.approx(0.102)
    assert attrs[semconv.CARBON_REQUEST_ROUTE] == "prefill@eu-north-1>decode@us-east-1"
    assert attrs[semconv.GEN_AI_REQUEST_MODEL] == "tiny-llama"


def test_a_span_after_the_roll_up_is_late_counted_and_passed_on():
    rollup = RequestRollup(RollupSettings(settle_ns=SECOND))
    _, router, prefill, decode = disaggregated_request()
    rollup.add([router, prefill], T0)
    assert len(rollup.release(T0 + SECOND).requests) == 1
    rollup.add([decode], T0 + 2 * SECOND)
    out = rollup.release(T0 + 2 * SECOND)
    assert rollup.late_spans == 2 and out.requests == []
    assert len(all_spans(out.spans)) == 2  # passed on unchanged


def test_a_trace_without_root_waits_for_the_idle_timeout_then_picks_the_earliest_orphan():
    rollup = RequestRollup(RollupSettings(settle_ns=SECOND, idle_timeout_ns=10 * SECOND))
    _, _, prefill, decode = disaggregated_request()
    rollup.add([prefill, decode], T0)
    early = rollup.release(T0 + 9 * SECOND)
    assert early.requests == []
    # siblings of the earliest orphan (same missing parent) can never carry the summary: they go on at once
    assert sorted(s.name for _, s in all_spans(early.spans)) == sorted(
        [semconv.PHASE_PREFILL, semconv.PHASE_KV_TRANSFER, semconv.PHASE_DECODE])
    out = rollup.release(T0 + 10 * SECOND)
    assert out.requests[0].total_g == pytest.approx(0.102)
    roots = [s for _, s in all_spans(out.spans)
             if semconv.CARBON_REQUEST_TOTAL_GCO2E in attributes_to_dict(s.attributes)]
    assert [s.name for s in roots] == [semconv.PHASE_QUEUE]  # earliest span whose parent never came


def test_flush_rolls_up_everything_and_bounded_memory_rolls_up_the_oldest():
    rollup = RequestRollup(RollupSettings(max_traces=1))
    for _ in range(3):
        _, router, prefill, _ = disaggregated_request()
        rollup.add([router, prefill], T0)
    assert len(rollup.release(T0).requests) == 2  # over the bound: the two oldest go early
    assert len(rollup.release(T0, flush=True).requests) == 1
    assert rollup.pending_traces == 0


def _reference_carrier(trace: list[Span]) -> Span:
    """The rule as written in the docs, over every span of the trace at once."""
    for span in trace:
        if not span.parent_span_id:
            return span
    ids = {span.span_id for span in trace}
    orphans = [span for span in trace if span.parent_span_id not in ids] or trace
    return min(orphans, key=lambda s: s.start_time_unix_nano)


@pytest.mark.parametrize("seed", range(40))
def test_only_possible_carriers_are_held_and_the_summary_lands_where_the_rule_says(seed):
    """Random traces (roots, missing parents, parents that come later, cycles, equal start times) in
    random batches: every span comes out exactly once, and the summary is on the span that the rule
    picks from the whole trace, though the roll-up held only the spans that could still be picked."""
    rng = random.Random(seed)
    traces: dict[bytes, list[Span]] = {}
    sent = []
    for t in range(8):
        trace_id = bytes([t + 1]) * 16
        ids = [bytes([t + 1, i + 1]) * 4 for i in range(rng.randrange(1, 7))]
        for span_id in ids:
            parent = rng.choice([b"", rng.choice(ids), bytes([t + 1, 99]) * 4, bytes([t + 1, 98]) * 4])
            span = Span(trace_id=trace_id, span_id=span_id, parent_span_id=parent, name=span_id.hex(),
                        start_time_unix_nano=rng.choice([1, 2, 3]))
            traces.setdefault(trace_id, []).append(span)
            sent.append(span)
    rng.shuffle(sent)
    arrival = {s.span_id: i for i, s in enumerate(sent)}
    rollup = RequestRollup(RollupSettings(settle_ns=0, idle_timeout_ns=0))
    out = []
    while sent:
        size = rng.randrange(1, 5)
        chunk, sent = sent[:size], sent[size:]
        rs = ResourceSpans()
        rs.scope_spans.add().spans.extend(chunk)
        rollup.add([rs], T0)
        out += [s for _, s in all_spans(rollup.release(T0 - 1).spans)]  # nothing due yet: only spans passed on
    held = [s for _, s in all_spans(rollup.release(T0, flush=True).spans)]
    # held to the end: a trace's root, else at most the earliest child of each missing parent and the earliest span
    assert len(held) <= sum(1 if any(not s.parent_span_id for s in trace) else
                            len({s.parent_span_id for s in trace} - {s.span_id for s in trace}) + 1
                            for trace in traces.values())
    out += held
    assert sorted(s.span_id for s in out) == sorted(s.span_id for trace in traces.values() for s in trace)
    carriers = {s.trace_id: s.span_id for s in out if semconv.CARBON_REQUEST_TOTAL_GCO2E in
                attributes_to_dict(s.attributes)}
    for trace_id, trace in traces.items():
        in_arrival = sorted(trace, key=lambda s: arrival[s.span_id])
        assert carriers[trace_id] == _reference_carrier(in_arrival).span_id


def test_a_held_root_is_taken_out_of_its_message_which_goes_on_and_the_root_keeps_resource_and_scope():
    rollup = RequestRollup(RollupSettings(settle_ns=SECOND))
    trace, root_id = os.urandom(16), os.urandom(8)
    message = spans({semconv.SERVICE_NAME: "router", semconv.CLOUD_REGION: "eu-north-1"}, [
        SpanSpec(None, T0, T0 + 3 * SECOND, trace_id=trace, span_id=root_id, name="root"),
        priced(semconv.PHASE_PREFILL, T0 + 100, T0 + SECOND, trace, root_id, 400.0, 0.002, 0.01)])
    message.scope_spans[0].scope.name = "router-scope"
    other_scope = message.scope_spans.add()
    other_scope.scope.name = "engine"
    decode = priced(semconv.PHASE_DECODE, T0 + SECOND, T0 + 2 * SECOND, trace, root_id, 600.0, 0.07, 0.02)
    other_scope.spans.append(spans({}, [decode]).scope_spans[0].spans[0])
    rollup.add([message], T0)
    early = rollup.release(T0)
    assert early.requests == []
    assert [(ss.scope.name, [s.name for s in ss.spans]) for rs in early.spans for ss in rs.scope_spans] == [
        ("router-scope", [semconv.PHASE_PREFILL]), ("engine", [semconv.PHASE_DECODE])]
    out = rollup.release(T0 + SECOND)
    (rs,) = out.spans
    assert attributes_to_dict(rs.resource.attributes)[semconv.SERVICE_NAME] == "router"
    ((scope, (root,)),) = [(ss.scope.name, list(ss.spans)) for ss in rs.scope_spans]
    assert scope == "router-scope" and root.name == "root"
    assert attributes_to_dict(root.attributes)[semconv.CARBON_REQUEST_SPAN_COUNT] == 3
    assert out.requests[0].total_g == pytest.approx(0.102) and out.requests[0].service_name == "router"


@pytest.mark.parametrize(("tokens", "expected"), [
    ([512, 0.5], 512.5), (["12", -0.0], 12.0), ([True, 2**60 + 1], float(2**60 + 1)), (["n/a", 3.25], 3.25),
])
def test_token_counts_of_any_type_sum_as_their_float_value(tokens, expected):
    """Ints and floats are added as they are, everything else through ``as_float`` (bools and
    non-numbers count 0): the same sums as converting each first."""
    rollup = RequestRollup(RollupSettings(settle_ns=0))
    trace, root_id = os.urandom(16), os.urandom(8)
    specs = [SpanSpec(None, T0, T0 + SECOND, trace_id=trace, span_id=root_id)]
    specs += [priced(semconv.PHASE_PREFILL, T0 + i, T0 + SECOND, trace, root_id, 1.0, 0.1, 0.1,
                     **{semconv.GEN_AI_USAGE_INPUT_TOKENS: value}) for i, value in enumerate(tokens)]
    rollup.add([spans({semconv.SERVICE_NAME: "prefill"}, specs)], T0)
    (summary,) = rollup.release(T0, flush=True).requests
    assert summary.input_tokens == expected and type(summary.input_tokens) is float
