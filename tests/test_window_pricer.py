"""The window pricer against the walk over a span's pieces (``attribute_measured``), which it
stands in for: where it answers, it must give the same figures; where a share would be capped or
the span is not inside its window it must decline, and the join then takes the walk.

Hypothesis draws a GPU sampled at uneven intervals (one of them a gap), workers whose counters
move at arbitrary times (prefill and decode tokens and request-seconds, with stretches of no
work), and spans anywhere around the series.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from otlp_data import SECOND, T0, energy_metrics, load_metrics, node_resource

from carbonspan.processors import semconv
from carbonspan.processors.attribution import WindowPricer, attribute_measured
from carbonspan.processors.telemetry import Telemetry

MS = 1_000_000
GPU = "GPU-0"
GAP_NS = 2 * SECOND
IDLE_W = 70.0

steps = st.lists(st.integers(20 * MS, 3 * SECOND), min_size=3, max_size=25)  # sampling intervals
watts = st.floats(40.0, 700.0)


def amounts(top: float) -> st.SearchStrategy[float]:
    """None, or at least a billionth: tokens are whole and request-seconds ns-resolved. Smaller
    figures reach float's subnormal range, where no two routes to one figure round alike; 1e-9
    against 900 still spans twelve orders of magnitude, which a difference of running totals
    (the pricer's first version) cannot resolve."""
    return st.one_of(st.just(0.0), st.floats(1e-9, top))


counter_moves = st.lists(st.tuples(st.integers(1 * MS, 400 * MS), amounts(900.0)), min_size=0, max_size=30)
#: start and length as fractions of the sampled time (a few spans start before it or end after it)
span = st.tuples(st.floats(-0.05, 1.0), st.floats(0.0, 0.6), amounts(2000.0), st.sampled_from(semconv.COMPUTE_PHASES))


def counter(moves: list[tuple[int, float]], scale: float) -> list[tuple[int, float]]:
    """A cumulative counter that moves by the drawn amounts (zero: no work) at the drawn steps."""
    t, total, out = T0, 0.0, [(T0, 0.0)]
    for dt, amount in moves:
        t += dt
        total += amount * scale
        out.append((t, total))
    return out


def telemetry(intervals: list[int], power: list[float], moves: dict[tuple[str, str], list]) -> Telemetry:
    tel = Telemetry(retention_ns=3600 * SECOND)
    times = [T0]
    for dt in intervals:
        times.append(times[-1] + dt)
    energy, cum = [(T0, 0.0)], 0.0
    for k in range(1, len(times)):
        cum += power[k % len(power)] * (times[k] - times[k - 1]) / SECOND
        energy.append((times[k], cum))
    res = node_resource([GPU])
    metrics = [energy_metrics(GPU, energy)]
    for (metric, phase), drawn in moves.items():
        scale = 1.0 if metric == semconv.CARBON_WORKER_TOKENS else 1e-3
        metrics.append(load_metrics(res, counter(drawn, scale), phase=phase, metric_name=metric))
    assert tel.add(metrics).rejected == 0
    return tel


def walk(tel: Telemetry, a: int, b: int, measure: float, phase: str | None, metric: str):
    series = tel.gpus[GPU].series
    rate = functools.partial(tel.phase_token_rates, GPU, phase) if phase else None
    return attribute_measured(series, functools.partial(tel.load_at, GPU, metric),
                              functools.partial(tel.load_breakpoints, GPU, metric), a, b, measure, GAP_NS, IDLE_W, rate)


def pricer(tel: Telemetry, lo: int, hi: int, metric: str) -> WindowPricer:
    return WindowPricer(tel.gpus[GPU].series, functools.partial(tel.load_at, GPU, metric),
                        functools.partial(tel.load_breakpoints, GPU, metric), lo, hi, GAP_NS, IDLE_W,
                        functools.partial(tel.phase_token_rates, GPU))


def price(window: WindowPricer, spans: list[tuple[int, int, float]], phase: str | None):
    a, b, measure = (np.array(column) for column in zip(*spans, strict=True))
    return window.price(a.astype(np.int64), b.astype(np.int64), measure.astype(float), phase)


def same(priced, k: int, walked) -> None:
    assert priced.energy_j[k] == pytest.approx(walked.energy_j, rel=1e-8, abs=1e-9)
    assert priced.gpu_seconds[k] == pytest.approx(walked.gpu_seconds, rel=1e-8, abs=1e-12)
    assert priced.window_energy_j[k] == pytest.approx(walked.window_energy_j, rel=1e-12)
    quality = semconv.QUALITY_INTERPOLATED if priced.interpolated[k] else semconv.QUALITY_MEASURED
    assert quality == walked.quality


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# a piece with almost no work makes a huge density: both failed the pricer's first version, which
# took a span's integral as a difference of running totals from the window's start
@example(intervals=[1_523_650_878, 20 * MS, 20 * MS], power=[40.0], prefill=[],
         decode=[(1 * MS, 1e-9), (121810891, 0.0), (226536432, 0.0), (1 * MS, 167.980236378693)],
         with_load=True, policy="tokens",
         spans=[(0.2178497440716602, 0.4166928397804145, 1584.884575215297, "prefill")])
@example(intervals=[224951486, 20 * MS, 20002981], power=[115.0], prefill=[],
         decode=[(1000011, 1e-9), (1000001, 0.0), (63238474, 0.0), (1000141, 25.0)],
         with_load=True, policy="tokens", spans=[(0.25, 0.5, 1.0, "prefill")])
@given(intervals=steps, power=st.lists(watts, min_size=1, max_size=6),
       prefill=counter_moves, decode=counter_moves, with_load=st.booleans(),
       policy=st.sampled_from(["tokens", "time"]), spans=st.lists(span, min_size=1, max_size=12))
def test_where_the_pricer_answers_it_agrees_with_the_walk(intervals, power, prefill, decode, with_load, policy, spans):
    moves = {}
    if with_load:
        for phase, drawn in ((semconv.PHASE_PREFILL, prefill), (semconv.PHASE_DECODE, decode)):
            moves[(semconv.CARBON_WORKER_TOKENS, phase)] = drawn
            moves[(semconv.CARBON_WORKER_REQUEST_TIME, phase)] = [(dt, 100.0 if x else 0.0) for dt, x in drawn]
    tel = telemetry(intervals, power, moves)
    metric = semconv.CARBON_WORKER_TOKENS if policy == "tokens" else semconv.CARBON_WORKER_REQUEST_TIME
    length = sum(intervals)
    windows = [(T0 + int(s * length), T0 + int((s + d) * length), m, phase) for s, d, m, phase in spans]
    window = pricer(tel, min(a for a, _, _, _ in windows), max(b for _, b, _, _ in windows), metric)
    times = tel.gpus[GPU].series.points()[0]
    for phase in semconv.COMPUTE_PHASES:
        rate_phase = phase if policy == "tokens" else None
        mine = [(a, b, measure) for a, b, measure, p in windows if p == phase]
        if not mine:
            continue
        priced = price(window, mine, rate_phase)
        for k, (a, b, measure) in enumerate(mine):
            if not priced.ok[k]:
                assert not (times[0] <= a < b <= times[-1]) or with_load  # declines only outside, or for a cap
                continue
            same(priced, k, walk(tel, a, b, measure, rate_phase, metric))


def test_spans_of_one_batch_inside_the_data_are_all_priced_and_a_capped_share_is_declined():
    """Counters that agree with the spans: every span is priced by the window; a span claiming more
    tokens than its worker reported would take a capped share, so the window declines it."""
    prefill_moves = [(100 * MS, 300.0)] * 20  # 3000 tokens/s, steady
    tel = telemetry([100 * MS] * 25, [400.0], {
        (semconv.CARBON_WORKER_TOKENS, semconv.PHASE_PREFILL): prefill_moves,
        (semconv.CARBON_WORKER_REQUEST_TIME, semconv.PHASE_PREFILL): [(100 * MS, 100.0)] * 20,
    })
    spans = [(T0 + k * 200 * MS + 10 * MS, T0 + k * 200 * MS + 190 * MS, 540.0) for k in range(9)]
    window = pricer(tel, spans[0][0], spans[-1][1], semconv.CARBON_WORKER_TOKENS)
    a, b, _ = spans[3]
    priced = price(window, [*spans, (a, b, 100_000.0)], semconv.PHASE_PREFILL)
    assert priced.ok.tolist() == [True] * len(spans) + [False]
    for k, (a_k, b_k, tokens) in enumerate(spans):
        same(priced, k, walk(tel, a_k, b_k, tokens, semconv.PHASE_PREFILL, semconv.CARBON_WORKER_TOKENS))
        assert 0 < priced.energy_j[k] < priced.window_energy_j[k]
    walked = walk(tel, a, b, 100_000.0, semconv.PHASE_PREFILL, semconv.CARBON_WORKER_TOKENS)
    assert walked.energy_j == pytest.approx(walked.window_energy_j)  # capped: all of the GPU's energy, no more
