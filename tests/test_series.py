"""Cumulative series: resets, retention, out-of-order samples, power integration."""

from __future__ import annotations

import pytest
from otlp_data import SECOND, T0

from carbonspan.processors.series import CumulativeSeries, SeriesKind


def test_retention_drops_old_samples_but_keeps_the_curve_continuous():
    series = CumulativeSeries(SeriesKind.COUNTER, retention_ns=10 * SECOND)
    for i in range(61):
        series.add(T0 + i * SECOND, 100.0 * i)
    assert 11 <= len(series) <= 13 and series.oldest_ns >= T0 + 48 * SECOND  # trimmed in chunks
    assert series.increase(T0 + 55 * SECOND, T0 + 60 * SECOND) == pytest.approx(500.0)
    assert not series.add(T0, 0.0).accepted and series.too_old == 1


def test_a_wrapped_or_reset_counter_counts_from_zero_and_is_counted():
    series = CumulativeSeries(SeriesKind.COUNTER)
    for t, v in [(0, 4_000_000_000.0), (1, 4_294_967_000.0), (2, 700.0), (3, 1_700.0)]:
        series.add(T0 + t * SECOND, v)
    assert series.increase(T0, T0 + 3 * SECOND) == pytest.approx(294_967_000.0 + 700.0 + 1000.0)
    assert series.resets == 1


def test_a_sample_older_than_the_oldest_moves_the_anchor_back():
    series = CumulativeSeries(SeriesKind.COUNTER)
    series.add(T0 + 2 * SECOND, 300.0)
    series.add(T0 + 3 * SECOND, 400.0)
    series.add(T0 + SECOND, 100.0)
    assert series.increase(T0 + SECOND, T0 + 3 * SECOND) == pytest.approx(300.0)


def test_power_samples_integrate_by_trapezoids():
    series = CumulativeSeries(SeriesKind.POWER)
    for t, w in [(0, 100.0), (1, 300.0), (3, 300.0)]:
        series.add(T0 + t * SECOND, w)
    assert series.increase(T0, T0 + 3 * SECOND) == pytest.approx(200.0 + 600.0)
    assert not series.add(T0 + 4 * SECOND, -5.0).accepted


def test_queries_never_extrapolate_past_the_samples():
    series = CumulativeSeries(SeriesKind.COUNTER)
    series.add(T0, 0.0)
    series.add(T0 + SECOND, 10.0)
    assert series.increase(T0 - SECOND, T0 + 5 * SECOND) == pytest.approx(10.0)
    assert series.last_rate() == pytest.approx(10.0)
