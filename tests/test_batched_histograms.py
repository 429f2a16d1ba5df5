"""BatchedHistograms against the OpenTelemetry SDK's own explicit-bucket histogram: same values in,
same points out (buckets, count, sum, min, max per attribute set, cumulative over collections)."""

from __future__ import annotations

import math
import random

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View

from carbonspan.processors import semconv
from carbonspan.processors.batched_histograms import FOLD_EVERY, BatchedHistograms

BOUNDS = (0.001, 0.01, 0.1, 0.5, 1.0, 10.0)
NAMES = ("model", "route")
KEYS = [("llama", "p>d"), ("llama", None), ("mistral", "p>d")]


def sdk_histogram():
    reader = InMemoryMetricReader()
    view = View(instrument_name="h", aggregation=ExplicitBucketHistogramAggregation(BOUNDS))
    histogram = MeterProvider(metric_readers=[reader], views=[view]).get_meter("t").create_histogram("h")
    return histogram, reader


def sdk_points(reader) -> dict[frozenset, object]:
    data = reader.get_metrics_data()
    [metric] = [m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics]
    return {frozenset(p.attributes.items()): p for p in metric.data.data_points}


def values(rng: random.Random, n: int) -> list[float]:
    """Values in every bucket, on the bounds themselves, and the ones the SDK drops."""
    special = [*BOUNDS, 0.0, -1.0, math.nan, math.inf, 1e9]
    return [rng.choice(special) if rng.random() < 0.2 else rng.uniform(0, 12) ** 2 / 12 for _ in range(n)]


def test_points_match_the_sdk_over_two_collections():
    rng = random.Random(3)
    # the second collection's values are folded in several goes (FOLD_EVERY), the first's in one
    batches = [[(rng.choice(KEYS), value) for value in values(rng, n)] for n in (500, 3 * FOLD_EVERY + 300)]
    ours = BatchedHistograms([BOUNDS, BOUNDS], NAMES, start_ns=100)
    sdk, reader = sdk_histogram()
    for batch in batches:
        for key, value in batch:
            ours.add(key, (value, value))
            sdk.record(value, {k: v for k, v in zip(NAMES, key, strict=True) if v is not None})
        expected = sdk_points(reader)
        for points in ours.collect(now_ns=200):
            assert {frozenset(p.attributes.items()) for p in points} == set(expected)
            for point in points:
                oracle = expected[frozenset(point.attributes.items())]
                assert point.bucket_counts == list(oracle.bucket_counts)
                assert point.count == oracle.count
                assert point.sum == pytest.approx(oracle.sum, rel=1e-12)
                assert (point.min, point.max) == (oracle.min, oracle.max)
    left_out = sum(not (math.isfinite(value) and value >= 0) for batch in batches for _, value in batch)
    assert ours.dropped == 2 * left_out > 0  # each value went to both histograms


def test_a_series_starts_at_the_collection_before_its_first_value():
    ours = BatchedHistograms([BOUNDS], NAMES, start_ns=100)
    ours.add(KEYS[0], (0.2,))
    [[first]] = ours.collect(now_ns=200)
    ours.add(KEYS[1], (0.3,))
    [points] = ours.collect(now_ns=300)
    starts = {p.attributes.get("route"): p.start_ns for p in points}
    assert starts == {"p>d": 100, None: 200}
    assert first.attributes == {"model": "llama", "route": "p>d"}
    assert {p.attributes.get("route"): p.count for p in points} == {"p>d": 1, None: 1}


def test_attribute_sets_beyond_the_limit_go_to_one_overflow_series():
    ours = BatchedHistograms([BOUNDS], NAMES, start_ns=0, max_series=2)
    for i in range(5):
        ours.add((f"model-{i}", None), (1.0,))
    [points] = ours.collect(now_ns=1)
    assert [(p.attributes, p.count) for p in points] == [
        ({"model": "model-0"}, 1), ({"model": "model-1"}, 1), ({semconv.OTEL_METRIC_OVERFLOW: True}, 3)]


def test_nothing_recorded_gives_no_points_and_bad_bounds_are_refused():
    assert BatchedHistograms([BOUNDS], NAMES, start_ns=0).collect(now_ns=1) == [[]]
    with pytest.raises(ValueError, match="strictly increasing"):
        BatchedHistograms([(1.0, 1.0)], NAMES, start_ns=0)
