"""Explicit-bucket histograms fed a batch at a time: the per-request CO2e and energy metrics.

The collector records two values for every request it rolls up. The OpenTelemetry SDK takes one
value per ``Histogram.record`` call and cleans and hashes the attributes on every call (~7 µs,
over a tenth of the collector's CPU at 30k spans/s; bench/PERF.md, round 6), and it has no call
that takes a batch. Here a request costs one list append, and the values are folded into their
buckets with numpy when the metrics are collected.

The points mean what the SDK's ``ExplicitBucketHistogramAggregation`` under cumulative
temporality means, and tests/test_batched_histograms.py holds them against the SDK itself: bucket
``i`` counts the values in ``(bounds[i-1], bounds[i]]``; count, sum, min and max are over every
value so far; a value that is not finite or is negative is left out (the SDK drops it with a
warning; here ``dropped`` counts it); a series starts at the collection before its first value;
beyond ``max_series`` attribute sets the values go to one more series,
``otel.metric.overflow: true``.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from carbonspan.processors import semconv

#: the SDK's default cardinality limit per instrument
DEFAULT_MAX_SERIES = 2000
#: values waiting to be folded, at most: memory stays bounded however long the collection interval
FOLD_EVERY = 4096
_OVERFLOW_KEY = object()  # no attribute values can equal it


@dataclass(frozen=True, slots=True)
class HistogramPoint:
    """One attribute set's cumulative histogram."""

    attributes: dict[str, Any]
    start_ns: int
    count: int
    sum: float
    bucket_counts: list[int]
    min: float
    max: float


class _Histogram:
    """One histogram's arrays, a row per series."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = np.asarray(bounds, dtype=float)
        if self.bounds.ndim != 1 or np.any(np.diff(self.bounds) <= 0) or not np.all(np.isfinite(self.bounds)):
            raise ValueError(f"histogram bounds must be finite and strictly increasing, got {list(bounds)}")
        self.counts = np.zeros((0, len(self.bounds) + 1), dtype=np.int64)
        self.sums = np.zeros(0)
        self.mins = np.zeros(0)
        self.maxs = np.zeros(0)

    def grow(self, series: int) -> None:
        extra = series - len(self.sums)
        if extra > 0:
            self.counts = np.vstack([self.counts, np.zeros((extra, self.counts.shape[1]), dtype=np.int64)])
            self.sums = np.concatenate([self.sums, np.zeros(extra)])
            self.mins = np.concatenate([self.mins, np.full(extra, np.inf)])
            self.maxs = np.concatenate([self.maxs, np.full(extra, -np.inf)])

    def fold(self, rows: np.ndarray, values: np.ndarray) -> int:
        """Add the values (``rows``: each one's series); returns how many were left out."""
        kept = np.isfinite(values) & (values >= 0)
        rows, values = rows[kept], values[kept]
        width = self.counts.shape[1]
        cells = rows * width + np.searchsorted(self.bounds, values, side="left")
        self.counts += np.bincount(cells, minlength=self.counts.size).reshape(self.counts.shape)
        self.sums += np.bincount(rows, weights=values, minlength=len(self.sums))
        np.minimum.at(self.mins, rows, values)
        np.maximum.at(self.maxs, rows, values)
        return len(kept) - len(values)


class BatchedHistograms:
    """Histograms (one per entry of ``bounds``) over the same attribute sets: each ``add`` gives a
    value to each. ``attribute_names``: what the values of an ``add``'s key are called (a None value
    leaves its attribute out, as OTel attributes cannot be None)."""

    def __init__(self, bounds: Sequence[Sequence[float]], attribute_names: Sequence[str], start_ns: int,
                 max_series: int = DEFAULT_MAX_SERIES) -> None:
        if max_series < 1:
            raise ValueError(f"max_series must be >= 1, got {max_series}")
        self._histograms = [_Histogram(b) for b in bounds]
        self._names = tuple(attribute_names)
        self._max_series = max_series
        self._pending: list[tuple[Hashable, Sequence[float]]] = []
        self._series: dict[Hashable, int] = {}
        self._attributes: list[dict[str, Any]] = []
        self._starts: list[int] = []
        self._last_collect_ns = start_ns
        self.dropped = 0

    def add(self, key: tuple, values: Sequence[float]) -> None:
        """One request: ``key`` holds the values of ``attribute_names``, ``values`` one per histogram."""
        self._pending.append((key, values))
        if len(self._pending) >= FOLD_EVERY:
            self._fold()

    def collect(self, now_ns: int) -> list[list[HistogramPoint]]:
        """Each histogram's points, cumulative up to now (series without a value left out)."""
        self._fold()
        self._last_collect_ns = now_ns
        return [self._points(histogram) for histogram in self._histograms]

    def _fold(self) -> None:
        pending, self._pending = self._pending, []
        if pending:
            rows = np.fromiter((self._row(key) for key, _ in pending), dtype=np.intp, count=len(pending))
            values = np.array([v for _, v in pending], dtype=float).reshape(len(pending), len(self._histograms))
            for column, histogram in enumerate(self._histograms):
                histogram.grow(len(self._attributes))
                self.dropped += histogram.fold(rows, values[:, column])

    def _row(self, key: Hashable) -> int:
        row = self._series.get(key)
        if row is None:
            if len(self._series) >= self._max_series:
                key = _OVERFLOW_KEY
                row = self._series.get(key)
            if row is None:
                row = self._series[key] = len(self._attributes)
                self._attributes.append({semconv.OTEL_METRIC_OVERFLOW: True} if key is _OVERFLOW_KEY else
                                        {n: v for n, v in zip(self._names, key, strict=True) if v is not None})
                self._starts.append(self._last_collect_ns)
        return row

    def _points(self, histogram: _Histogram) -> list[HistogramPoint]:
        counts = histogram.counts.sum(axis=1).tolist()
        return [HistogramPoint(self._attributes[row], self._starts[row], count, sums, buckets, low, high)
                for row, (count, sums, buckets, low, high) in enumerate(zip(
                    counts, histogram.sums.tolist(), histogram.counts.tolist(), histogram.mins.tolist(),
                    histogram.maxs.tolist(), strict=True))
                if count]
