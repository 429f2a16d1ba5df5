"""The carbon join on real OTLP messages, with the bundled intensity and facility tables."""

from __future__ import annotations

import csv
import random

import pytest
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from otlp_data import (
    SECOND,
    T0,
    SpanSpec,
    all_spans,
    energy_metrics,
    load_metrics,
    node_resource,
    power_metrics,
    ramp,
    spans,
)

from carbonspan.processors import semconv
from carbonspan.processors.facility import FacilityTables
from carbonspan.processors.intensity import StaticTableProvider, data_path
from carbonspan.processors.join import OUTPUT_ATTRIBUTES, CarbonJoin, JoinSettings
from carbonspan.processors.otlp import attributes_to_dict

MS = 1_000_000


def make_join(**settings) -> CarbonJoin:
    return CarbonJoin(JoinSettings(**settings), StaticTableProvider(), FacilityTables.default())


def constant_power(gpu: str, watts: float, start: int = T0 - SECOND, end: int = T0 + 4 * SECOND, **kw):
    return energy_metrics(gpu, ramp(start, end, 100 * MS, watts, base=1000.0), **kw)


def enriched(join: CarbonJoin, now: int = T0 + 60 * SECOND, flush: bool = False, passed: list | None = None
             ) -> list[dict]:
    """The attributes of the spans released, after those ``add_spans`` handed on at once (``passed``)."""
    released = (passed or []) + join.release(now, flush=flush)
    return [attributes_to_dict(span.attributes) for _, span in all_spans(released)]


def test_lone_request_at_300_w_for_2_s_gets_600_j():
    join = make_join()
    res = node_resource(["gpu-a"])
    join.add_metrics([constant_power("gpu-a", 300.0),
                      load_metrics(res, ramp(T0, T0 + 2 * SECOND, 100 * MS, 500.0))])
    join.add_metrics([load_metrics(res, [(T0 + 4 * SECOND, 1000.0)])])
    join.add_spans([spans(res, [SpanSpec(semconv.PHASE_PREFILL, T0, T0 + 2 * SECOND, tokens=1000)])], T0)
    (attrs,) = enriched(join)
    assert attrs[semconv.CARBON_ENERGY_JOULES] == pytest.approx(600.0, rel=1e-9)
    assert attrs[semconv.CARBON_QUALITY] == semconv.QUALITY_MEASURED


def test_two_identical_concurrent_requests_get_300_j_each():
    join = make_join()
    res = node_resource(["gpu-a"])
    join.add_metrics([constant_power("gpu-a", 300.0),
                      load_metrics(res, ramp(T0, T0 + 2 * SECOND, 100 * MS, 1000.0)),
                      load_metrics(res, [(T0 + 4 * SECOND, 2000.0)])])
    join.add_spans([spans(res, [SpanSpec(semconv.PHASE_DECODE, T0, T0 + 2 * SECOND, tokens=1000),
                                SpanSpec(semconv.PHASE_DECODE, T0, T0 + 2 * SECOND, tokens=1000)])], T0)
    energies = [a[semconv.CARBON_ENERGY_JOULES] for a in enriched(join)]
    assert energies == pytest.approx([300.0, 300.0], rel=1e-9)


def test_time_policy_splits_equally_among_concurrent_requests():
    join = make_join(policy="time")
    res = node_resource(["gpu-a"])
    # two requests running for the same 2 s: 2 request-seconds per second
    join.add_metrics([constant_power("gpu-a", 300.0),
                      load_metrics(res, ramp(T0, T0 + 2 * SECOND, 100 * MS, 2.0),
                                   metric_name=semconv.CARBON_WORKER_REQUEST_TIME),
                      load_metrics(res, [(T0 + 4 * SECOND, 4.0)], metric_name=semconv.CARBON_WORKER_REQUEST_TIME)])
    join.add_spans([spans(res, [SpanSpec(semconv.PHASE_DECODE, T0, T0 + 2 * SECOND, tokens=10),
                                SpanSpec(semconv.PHASE_DECODE, T0, T0 + 2 * SECOND, tokens=990)])], T0)
    energies = [a[semconv.CARBON_ENERGY_JOULES] for a in enriched(join)]
    assert energies == pytest.approx([300.0, 300.0], rel=1e-9)


def test_tp4_span_sums_its_four_gpus():
    join = make_join()
    gpus = ["gpu-0", "gpu-1", "gpu-2", "gpu-3"]
    res = node_resource(gpus)
    join.add_metrics([constant_power(g, w) for g, w in zip(gpus, (100.0, 200.0, 300.0, 400.0), strict=True)])
    join.add_metrics([load_metrics(res, ramp(T0, T0 + 2 * SECOND, 100 * MS, 500.0)),
                      load_metrics(res, [(T0 + 4 * SECOND, 1000.0)])])
    join.add_spans([spans(res, [SpanSpec(semconv.PHASE_PREFILL, T0, T0 + 2 * SECOND, tokens=1000)])], T0)
    (attrs,) = enriched(join)
    assert attrs[semconv.CARBON_ENERGY_JOULES] == pytest.approx(2 * (100 + 200 + 300 + 400), rel=1e-9)


def test_counter_reset_inside_the_window_is_handled():
    join = make_join()
    res = node_resource(["gpu-a"])
    reset_at = T0 + SECOND
    before = ramp(T0 - SECOND, reset_at, 100 * MS, 300.0, base=5_000.0)
    after = ramp(reset_at, T0 + 4 * SECOND, 100 * MS, 300.0)[1:]  # restarted from zero at reset_at
    join.add_metrics([energy_metrics("gpu-a", before), energy_metrics("gpu-a", after, start_ns=reset_at)])
    join.add_metrics([load_metrics(res, ramp(T0, T0 + 2 * SECOND, 100 * MS, 500.0)),
                      load_metrics(res, [(T0 + 4 * SECOND, 1000.0)])])
    join.add_spans([spans(res, [SpanSpec(semconv.PHASE_PREFILL, T0, T0 + 2 * SECOND, tokens=1000)])], T0)
    (attrs,) = enriched(join)
    assert attrs[semconv.CARBON_ENERGY_JOULES] == pytest.approx(600.0, rel=1e-9)
    assert join.telemetry.gpus["gpu-a"].energy.resets == 1


def test_power_only_gpu_is_integrated_by_trapezoids():
    join = make_join()
    res = node_resource(["gpu-p"])
    watts = [(t, 200.0 + 100.0 * ((t - T0) // (100 * MS) % 2)) for t in range(T0 - SECOND, T0 + 4 * SECOND, 100 * MS)]
    join.add_metrics([power_metrics("gpu-p", watts), load_metrics(res, ramp(T0, T0 + 2 * SECOND, 100 * MS, 500.0)),
                      load_metrics(res, [(T0 + 4 * SECOND, 1000.0)])])
    join.add_spans([spans(res, [SpanSpec(semconv.PHASE_PREFILL, T0, T0 + 2 * SECOND, tokens=1000)])], T0)
    (attrs,) = enriched(join)
    # alternating 200/300 W samples: every trapezoid averages 250 W
    assert attrs[semconv.CARBON_ENERGY_JOULES] == pytest.approx(500.0, rel=1e-9)


def test_out_of_order_and_duplicate_points_give_the_same_energy():
    samples = ramp(T0 - SECOND, T0 + 4 * SECOND, 100 * MS, 300.0, base=1000.0)
    shuffled = samples + samples[::3]
    random.Random(7).shuffle(shuffled)
    join = make_join()
    res = node_resource(["gpu-a"])
    for i in range(0, len(shuffled), 7):
        join.add_metrics([energy_metrics("gpu-a", shuffled[i:i + 7])])
    join.add_metrics([load_metrics(res, ramp(T0, T0 + 2 * SECOND, 100 * MS, 500.0)),
                      load_metrics(res, [(T0 + 4 * SECOND, 1000.0)])])
    join.add_spans([spans(res, [SpanSpec(semconv.PHASE_PREFILL, T0, T0 + 2 * SECOND, tokens=1000)])], T0)
    (attrs,) = enriched(join)
    assert attrs[semconv.CARBON_ENERGY_JOULES] == pytest.approx(600.0, rel=1e-9)
    assert join.telemetry.gpus["gpu-a"].energy.duplicates == len(samples[::3])


def test_span_waits_for_energy_data_covering_its_end():
    join = make_join(deadline_ns=10 * SECOND)
    res = node_resource(["gpu-a"])
    join.add_metrics([constant_power("gpu-a", 300.0, end=T0 + SECOND)])
    join.add_spans([spans(res, [SpanSpec(semconv.PHASE_PREFILL, T0, T0 + 2 * SECOND, tokens=10)])], T0 + 2 * SECOND)
    assert join.release(T0 + 3 * SECOND) == []
    assert join.pending_spans == 1
    join.add_metrics([constant_power("gpu-a", 300.0, start=T0 + SECOND, end=T0 + 3 * SECOND)])
    (attrs,) = enriched(join, now=T0 + 3 * SECOND)
    assert attrs[semconv.CARBON_QUALITY] == semconv.QUALITY_MEASURED
    assert join.pending_spans == 0


def test_span_whose_data_never_comes_is_exported_flagged():
    join = make_join(deadline_ns=5 * SECOND)
    unknown = node_resource(["gpu-unknown-0", "gpu-unknown-1"], instance="w1")  # TP=2, no data for either
    known_model = node_resource(["gpu-l4"], instance="w2", **{semconv.CARBON_GPU_MODEL: "NVIDIA L4"})
    join.add_spans([spans(unknown, [SpanSpec(semconv.PHASE_PREFILL, T0, T0 + SECOND, tokens=10)]),
                    spans(known_model, [SpanSpec(semconv.PHASE_PREFILL, T0, T0 + SECOND, tokens=10)])], T0)
    assert join.release(T0 + 4 * SECOND) == []
    out = enriched(join, now=T0 + 5 * SECOND)
    assert [a[semconv.CARBON_QUALITY] for a in out] == [semconv.QUALITY_MISSING, semconv.QUALITY_ESTIMATED]
    assert out[0][semconv.CARBON_ENERGY_JOULES] == 0.0
    assert out[1][semconv.CARBON_ENERGY_JOULES] > 0.0
    assert join.spans_flagged == 2


def test_span_after_the_last_sample_is_extrapolated_at_the_last_power():
    join = make_join(deadline_ns=SECOND)
    res = node_resource(["gpu-a"])
    join.add_metrics([constant_power("gpu-a", 300.0, end=T0 + SECOND)])
    join.add_spans([spans(res, [SpanSpec(semconv.PHASE_PREFILL, T0, T0 + 2 * SECOND, tokens=10)])], T0)
    (attrs,) = enriched(join, now=T0 + 10 * SECOND)
    assert attrs[semconv.CARBON_QUALITY] == semconv.QUALITY_EXTRAPOLATED
    assert attrs[semconv.CARBON_ENERGY_JOULES] == pytest.approx(600.0, rel=1e-9)  # no load counters: whole GPU


def test_co2_is_energy_times_pue_times_the_intensity_of_the_table_row_it_names():
    join = make_join()
    res = node_resource(["gpu-a"], provider="gcp", region="europe-west1")
    join.add_metrics([constant_power("gpu-a", 300.0), load_metrics(res, ramp(T0, T0 + 2 * SECOND, 100 * MS, 500.0)),
                      load_metrics(res, [(T0 + 4 * SECOND, 1000.0)])])
    join.add_spans([spans(res, [SpanSpec(semconv.PHASE_PREFILL, T0, T0 + 2 * SECOND, tokens=1000)])], T0)
    (attrs,) = enriched(join)
    with data_path("intensity_cloud_regions.csv").open() as f:
        row = next(r for r in csv.DictReader(f) if r["provider"] == "gcp" and r["region"] == "europe-west1")
    assert attrs[semconv.CARBON_INTENSITY] == pytest.approx(float(row["gco2e_per_kwh"]))
    pue = attrs[semconv.CARBON_PUE]
    assert pue == FacilityTables.default().pue("gcp", "europe-west1")[0]
    expected = 600.0 / 3.6e6 * pue * float(row["gco2e_per_kwh"])
    assert attrs[semconv.CARBON_OPERATIONAL_GCO2E] == pytest.approx(expected, rel=1e-12)
    assert attrs[semconv.CARBON_TOTAL_GCO2E] == pytest.approx(expected + attrs[semconv.CARBON_EMBODIED_GCO2E])
    assert attrs[semconv.CARBON_EMBODIED_GCO2E] > 0  # an H100 has a cited embodied figure
    assert attrs[semconv.CARBON_EMBODIED_SOURCE] == "ecologits:H100 SXM"


def test_a_gpu_without_an_embodied_figure_says_so_instead_of_a_silent_zero():
    join = make_join()
    res = node_resource(["gpu-l"])
    join.add_metrics([constant_power("gpu-l", 300.0, model="NVIDIA L40S")])
    passed = join.add_spans([spans(res, [SpanSpec(semconv.PHASE_DECODE, T0, T0 + 2 * SECOND, tokens=10),
                                         SpanSpec(semconv.PHASE_QUEUE, T0, T0 + SECOND)])], T0)
    by_phase = {attrs[semconv.CARBON_PHASE]: attrs for attrs in enriched(join, passed=passed)}
    decode, queue = by_phase[semconv.PHASE_DECODE], by_phase[semconv.PHASE_QUEUE]
    assert decode[semconv.CARBON_EMBODIED_GCO2E] == 0.0
    assert decode[semconv.CARBON_EMBODIED_SOURCE] == "none: no embodied figure for L40S"
    assert semconv.CARBON_EMBODIED_SOURCE not in queue  # no GPU time, nothing to source


def test_spans_that_use_no_gpu_pass_through_at_once():
    """Spans that computed nothing go on from add_spans, enriched in the message they came in;
    a compute span is taken out of it to wait for energy data."""
    join = make_join()
    router = {semconv.SERVICE_NAME: "router"}
    worker = node_resource(["gpu-a"])
    root = SpanSpec(None, T0, T0 + SECOND)
    request = [spans(router, [root]), spans(worker, [SpanSpec(semconv.PHASE_QUEUE, T0, T0 + SECOND),
                                                     SpanSpec(semconv.PHASE_PREFILL, T0, T0 + SECOND, tokens=5)])]
    root_bytes = request[0].SerializeToString()
    passed = join.add_spans(request, T0)
    assert passed[0] is request[0] and passed[1] is request[1]  # the received messages, not copies
    assert passed[0].SerializeToString() == root_bytes  # not GPU work: untouched
    (queue,) = [attributes_to_dict(span.attributes) for _, span in all_spans(passed[1:])]
    assert queue[semconv.CARBON_PHASE] == semconv.PHASE_QUEUE
    assert queue[semconv.CARBON_ENERGY_JOULES] == 0.0  # waiting in the queue draws no GPU energy
    assert join.pending_spans == 1 and join.release(T0) == []  # the prefill waits for energy data
    (prefill,) = enriched(join, flush=True)
    assert prefill[semconv.CARBON_PHASE] == semconv.PHASE_PREFILL


def test_flush_releases_every_waiting_span():
    join = make_join()
    res = node_resource(["gpu-a"])
    join.add_spans([spans(res, [SpanSpec(semconv.PHASE_DECODE, T0, T0 + SECOND, tokens=5)] * 3)], T0)
    assert len(all_spans(join.release(T0, flush=True))) == 3
    assert join.pending_spans == 0


def test_counterfactual_regions_price_the_same_energy_elsewhere():
    join = make_join(counterfactual_regions=(("gcp", "europe-north1"), ("aws", "us-east-1")))
    res = node_resource(["gpu-a"], provider="gcp", region="europe-west1")
    join.add_metrics([constant_power("gpu-a", 300.0)])
    join.add_spans([spans(res, [SpanSpec(semconv.PHASE_PREFILL, T0, T0 + 2 * SECOND, tokens=1000)])], T0)
    (attrs,) = enriched(join)
    north = attrs[semconv.counterfactual_attribute("europe-north1")]
    east = attrs[semconv.counterfactual_attribute("us-east-1")]
    assert north < attrs[semconv.CARBON_TOTAL_GCO2E] < east  # Finland's grid is cleaner, Virginia's dirtier


def test_every_attribute_the_join_writes_is_one_it_knows_as_its_own():
    """A span that arrives with none of OUTPUT_ATTRIBUTES gets them appended without a look for
    ones to replace: an attribute written but missing from the set would be repeated on a span that
    arrives with it."""
    join = make_join(idle="amortize", counterfactual_regions=(("gcp", "europe-north1"),))
    res = node_resource(["gpu-a"])
    join.add_metrics([constant_power("gpu-a", 300.0), load_metrics(res, ramp(T0, T0 + 2 * SECOND, 100 * MS, 500.0))])
    request = [spans(res, [SpanSpec(semconv.PHASE_PREFILL, T0, T0 + 2 * SECOND, tokens=1000),
                           SpanSpec(semconv.PHASE_QUEUE, T0, T0 + SECOND,
                                    attributes={semconv.CARBON_KV_BYTES: 1, semconv.GEN_AI_USAGE_INPUT_TOKENS: 9})])]
    inputs = [set(attributes_to_dict(span.attributes)) for _, span in all_spans(request)]
    written = [set(attrs) - keys for attrs, keys in zip(enriched(join, passed=join.add_spans(request, T0)),
                                                        reversed(inputs), strict=True)]
    assert {semconv.CARBON_GRID_ZONE, semconv.CARBON_ENERGY_IDLE_JOULES, semconv.CARBON_EMBODIED_SOURCE} <= written[1]
    for keys in written:
        assert keys and all(k in OUTPUT_ATTRIBUTES or k.startswith(semconv.CARBON_COUNTERFACTUAL_PREFIX) for k in keys)


def test_idle_amortisation_spreads_idle_energy_over_requests():
    join = make_join(idle="amortize")
    res = node_resource(["gpu-a"])
    # 300 W from T0-1s to T0+4s; work only during [T0, T0+2s]: 600 J busy, 900 J idle
    join.add_metrics([constant_power("gpu-a", 300.0), load_metrics(res, ramp(T0, T0 + 2 * SECOND, 100 * MS, 500.0)),
                      load_metrics(res, [(T0 + 4 * SECOND, 1000.0)])])
    join.add_spans([spans(res, [SpanSpec(semconv.PHASE_PREFILL, T0, T0 + 2 * SECOND, tokens=1000)])], T0)
    (attrs,) = enriched(join)
    assert attrs[semconv.CARBON_ENERGY_IDLE_JOULES] == pytest.approx(900.0, rel=1e-9)
    assert attrs[semconv.CARBON_ENERGY_JOULES] == pytest.approx(1500.0, rel=1e-9)
    (row,) = join.gpu_ledger()
    assert (row.measured_j, row.idle_j, row.attributed_j) == pytest.approx((1500.0, 900.0, 600.0))


def test_a_phase_counter_that_never_moves_does_not_hold_spans_back():
    join = make_join(deadline_ns=60 * SECOND)
    res = node_resource(["gpu-a"])
    join.add_metrics([constant_power("gpu-a", 300.0),
                      load_metrics(res, [(T0, 0.0)], phase=semconv.PHASE_DECODE),  # a prefill-only worker
                      load_metrics(res, ramp(T0, T0 + 2 * SECOND, 100 * MS, 500.0))])
    join.add_spans([spans(res, [SpanSpec(semconv.PHASE_PREFILL, T0, T0 + 2 * SECOND, tokens=1000)])], T0)
    (attrs,) = enriched(join, now=T0 + 3 * SECOND)  # released on data, long before the deadline
    assert attrs[semconv.CARBON_ENERGY_JOULES] == pytest.approx(600.0, rel=1e-9)


def counter_from_power(power_at, start: int, end: int, step: int) -> list[tuple[int, float]]:
    """An energy counter read every `step` of a GPU whose power is piecewise constant on 1 ms."""
    samples, total, t = [(start, 0.0)], 0.0, start
    while t < end:
        for ms in range(t, t + step, MS):
            total += power_at(ms) * MS / SECOND
        t += step
        samples.append((t, total))
    return samples


def test_idle_time_inside_a_sampling_interval_is_not_charged_to_the_span():
    # An H100 idles at 70 W; one prefill step of 1000 tokens runs 20 ms at 600 W inside a 100 ms sample.
    def power(t: int) -> float:
        return 600.0 if T0 + 100 * MS <= t < T0 + 120 * MS else 70.0

    join = make_join()
    res = node_resource(["gpu-a"])
    join.add_metrics([energy_metrics("gpu-a", counter_from_power(power, T0, T0 + SECOND, 100 * MS)),
                      load_metrics(res, [(T0, 0.0), (T0 + 100 * MS, 0.0), (T0 + 120 * MS, 1000.0),
                                         (T0 + SECOND, 1000.0)])])
    join.add_spans([spans(res, [SpanSpec(semconv.PHASE_PREFILL, T0 + 100 * MS, T0 + 120 * MS, tokens=1000)])], T0)
    (attrs,) = enriched(join)
    assert attrs[semconv.CARBON_ENERGY_JOULES] == pytest.approx(12.0, rel=1e-6)  # 600 W x 20 ms, no idle
    (row,) = join.gpu_ledger()
    assert row.idle_j == pytest.approx(70.0 * 0.98, rel=1e-6)
    assert row.attributed_j + row.idle_j == pytest.approx(row.measured_j, rel=1e-9)


def test_a_short_prefill_chunk_takes_its_share_of_its_step_not_of_the_whole_interval():
    # 500 W throughout; request d decodes 1 token per 10 ms step for 1 s; request p prefills 1000
    # tokens in the single step [0.50, 0.51] s. Truth: p = 5 J x 1000/1001, d = the rest.
    join = make_join()
    res = node_resource(["gpu-a"])
    steps = range(T0, T0 + SECOND + 1, 10 * MS)
    decode = [(t, (t - T0) / (10 * MS)) for t in steps]
    prefill = [(t, 1000.0 if t >= T0 + 510 * MS else 0.0) for t in steps]
    join.add_metrics([energy_metrics("gpu-a", ramp(T0, T0 + SECOND, 100 * MS, 500.0)),
                      load_metrics(res, decode, phase=semconv.PHASE_DECODE), load_metrics(res, prefill)])
    join.add_spans([spans(res, [SpanSpec(semconv.PHASE_PREFILL, T0 + 500 * MS, T0 + 510 * MS, tokens=1000),
                                SpanSpec(semconv.PHASE_DECODE, T0, T0 + SECOND, tokens=100)])], T0)
    prefill_j, decode_j = (a[semconv.CARBON_ENERGY_JOULES] for a in enriched(join))
    assert prefill_j == pytest.approx(5.0 * 1000 / 1001, rel=1e-6)
    assert decode_j == pytest.approx(500.0 - 5.0 * 1000 / 1001, rel=1e-6)


def test_a_decode_span_gets_one_token_per_step_however_long_the_step():
    """Steps of 100, 400 and 100 ms; the middle one also computes a 399-token prompt chunk. The
    decode request makes one token in each step, so its share of the long step is 1/400: spread
    evenly over its time it would claim 2 of its 3 tokens there and half of each short step."""
    join = make_join()
    res = node_resource(["gpu-a"])
    steps = [T0, T0 + 100 * MS, T0 + 500 * MS, T0 + 600 * MS]
    seconds = semconv.CARBON_WORKER_REQUEST_TIME
    join.add_metrics([
        constant_power("gpu-a", 100.0),
        load_metrics(res, list(zip(steps, [0.0, 1.0, 2.0, 3.0], strict=True)), phase=semconv.PHASE_DECODE),
        load_metrics(res, list(zip(steps, [0.0, 0.0, 399.0, 399.0], strict=True))),
        load_metrics(res, list(zip(steps, [0.0, 0.1, 0.5, 0.6], strict=True)), phase=semconv.PHASE_DECODE,
                     metric_name=seconds),
        load_metrics(res, list(zip(steps, [0.0, 0.0, 0.4, 0.4], strict=True)), metric_name=seconds),
        load_metrics(res, [(T0 + 4 * SECOND, 3.0)], phase=semconv.PHASE_DECODE),
        load_metrics(res, [(T0 + 4 * SECOND, 399.0)]),
    ])
    join.add_spans([spans(res, [
        SpanSpec(semconv.PHASE_DECODE, steps[0], steps[3], tokens=3, name="decode"),
        SpanSpec(semconv.PHASE_PREFILL, steps[1], steps[2], tokens=399, name="prefill"),
    ])], T0)
    by_phase = {a[semconv.CARBON_PHASE]: a[semconv.CARBON_ENERGY_JOULES] for a in enriched(join)}
    assert by_phase[semconv.PHASE_DECODE] == pytest.approx(10.0 + 40.0 / 400 + 10.0, rel=1e-6)
    assert by_phase[semconv.PHASE_PREFILL] == pytest.approx(40.0 * 399 / 400, rel=1e-6)


def test_spans_priced_after_new_metrics_see_them_not_what_earlier_spans_saw():
    """Spans in the same sampling intervals share the GPU's pieces; metrics arriving in between
    (here a second worker on the GPU reporting its work) must reprice the later spans."""
    join = make_join()
    worker_a, worker_b = node_resource(["gpu-a"], instance="a"), node_resource(["gpu-a"], instance="b")
    join.add_metrics([constant_power("gpu-a", 300.0),
                      load_metrics(worker_a, ramp(T0, T0 + 4 * SECOND, 100 * MS, 500.0))])
    window = SpanSpec(semconv.PHASE_PREFILL, T0, T0 + 2 * SECOND, tokens=1000)
    join.add_spans([spans(worker_a, [window])], T0)
    (alone,) = enriched(join, flush=True)
    join.add_metrics([load_metrics(worker_b, ramp(T0, T0 + 4 * SECOND, 100 * MS, 500.0))])
    join.add_spans([spans(worker_a, [window])], T0)
    (shared,) = enriched(join, flush=True)
    assert alone[semconv.CARBON_ENERGY_JOULES] == pytest.approx(600.0, rel=1e-9)
    assert shared[semconv.CARBON_ENERGY_JOULES] == pytest.approx(300.0, rel=1e-9)


def test_a_held_span_comes_out_whole_under_the_resource_and_scope_it_came_with():
    """Held spans are kept serialized apart from their request: resource, scope, schema URLs and
    every attribute must survive the round trip, in the group they arrived in."""
    join = make_join()
    res = node_resource(["gpu-a"])
    request = spans(res, [SpanSpec(semconv.PHASE_PREFILL, T0, T0 + SECOND, tokens=100,
                                   attributes={semconv.GEN_AI_REQUEST_ID: "r-1"})])
    request.schema_url = "https://opentelemetry.io/schemas/1.26.0"
    other = request.scope_spans.add(scope=InstrumentationScope(name="router", version="2"), schema_url="s2")
    other.spans.add().CopyFrom(request.scope_spans[0].spans[0])
    other.spans[0].name = "second"
    original = [span.SerializeToString() for ss in request.scope_spans for span in ss.spans]
    join.add_spans([request], T0)
    del request, other
    assert join.release(T0) == []  # both wait for energy data
    join.add_metrics([constant_power("gpu-a", 300.0)])
    (rs,) = join.release(T0 + 60 * SECOND, flush=True)
    assert rs.schema_url == "https://opentelemetry.io/schemas/1.26.0"
    assert attributes_to_dict(rs.resource.attributes)[semconv.CARBON_GPU_IDS] == ["gpu-a"]
    assert [(ss.scope.name, ss.schema_url, [s.name for s in ss.spans]) for ss in rs.scope_spans] == [
        ("tests", "", [semconv.PHASE_PREFILL]), ("router", "s2", ["second"])]
    for ss, before in zip(rs.scope_spans, original, strict=True):
        attrs = attributes_to_dict(ss.spans[0].attributes)
        assert attrs[semconv.GEN_AI_REQUEST_ID] == "r-1"
        assert attrs[semconv.CARBON_ENERGY_JOULES] > 0
        ss.spans[0].ClearField("attributes")
        expected = Span.FromString(before)
        expected.ClearField("attributes")
        assert ss.spans[0] == expected
