"""Conservation, per GPU: energy attributed to spans + idle energy = measured energy.

Hypothesis generates fleets of GPUs shared by workers (TP groups, several workers per GPU),
requests that join and leave at arbitrary times with arbitrary token counts, and power that
changes every sampling interval. The load counters are what a worker reports: the running sum
of its requests' tokens (or request-seconds), sampled whenever a request starts or ends.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from otlp_data import SECOND, T0, SpanSpec, energy_metrics, load_metrics, node_resource, spans

from carbonspan.processors import semconv
from carbonspan.processors.facility import FacilityTables
from carbonspan.processors.intensity import StaticTableProvider
from carbonspan.processors.join import CarbonJoin, JoinSettings

MS = 1_000_000
HORIZON = 6 * SECOND
STEP = 100 * MS

gpu_sets = st.sampled_from([("g0",), ("g1",), ("g0", "g1"), ("g2",), ("g1", "g2", "g3", "g0")])
request = st.tuples(
    st.integers(0, HORIZON - 10 * MS),  # start offset
    st.integers(1 * MS, 3 * SECOND),  # duration
    st.integers(1, 2000),  # tokens
    st.sampled_from(semconv.COMPUTE_PHASES),
)
worker = st.tuples(gpu_sets, st.lists(request, min_size=0, max_size=8))


def counter_samples(reqs, policy: str) -> list[tuple[int, float]]:
    """Cumulative measure of a worker's requests, sampled at every breakpoint and on a grid."""
    times = sorted({T0 - SECOND, T0 + HORIZON + 2 * SECOND, *range(T0, T0 + HORIZON, 250 * MS),
                    *(T0 + s for s, _, _, _ in reqs), *(T0 + min(s + d, HORIZON) for s, d, _, _ in reqs)})
    out = []
    for t in times:
        total = 0.0
        for s, d, tokens, _ in reqs:
            a, b = T0 + s, T0 + min(s + d, HORIZON)
            done = min(max(t - a, 0), b - a) / (b - a)
            total += done * (tokens if policy == "tokens" else (b - a) / SECOND)
        out.append((t, total))
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    workers=st.lists(worker, min_size=1, max_size=4),
    power=st.lists(st.floats(50.0, 700.0), min_size=4, max_size=4),
    wiggle=st.integers(0, 2**31),
    policy=st.sampled_from(["tokens", "time"]),
)
def test_attributed_plus_idle_equals_measured_per_gpu(workers, power, wiggle, policy):
    join = CarbonJoin(JoinSettings(policy=policy), StaticTableProvider(), FacilityTables.default())
    rng = np.random.default_rng(wiggle)
    for i, gpu in enumerate(("g0", "g1", "g2", "g3")):
        times = list(range(T0 - SECOND, T0 + HORIZON + 2 * SECOND, STEP))
        watts = power[i] * rng.uniform(0.3, 1.0, len(times))
        energy = np.concatenate([[0.0], np.cumsum(watts[1:] * STEP / SECOND)])
        join.add_metrics([energy_metrics(gpu, list(zip(times, energy.tolist(), strict=True)))])
    metric = semconv.CARBON_WORKER_TOKENS if policy == "tokens" else semconv.CARBON_WORKER_REQUEST_TIME
    for w, (gpus, reqs) in enumerate(workers):
        res = node_resource(gpus, instance=f"w{w}")
        join.add_metrics([load_metrics(res, counter_samples(reqs, policy), metric_name=metric)])
        join.add_spans([spans(res, [SpanSpec(phase, T0 + s, T0 + min(s + d, HORIZON), tokens=tokens)
                                    for s, d, tokens, phase in reqs])], T0)
    join.release(T0 + HORIZON + 3 * SECOND, flush=True)
    assert join.pending_spans == 0
    for row in join.gpu_ledger():
        assert row.measured_j > 0
        assert row.attributed_j + row.idle_j == pytest.approx(row.measured_j, rel=0.005)
