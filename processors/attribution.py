"""A span's share of one GPU's energy over its time window.

The GPU's energy is only known per sampling interval, so the share is decided per interval:
in interval k the span gets ``s_k / T_k`` of the energy ``E_k``, where ``s_k`` is the span's own
measure in the interval (its tokens, spread evenly over the span, for the ``tokens`` policy; its
seconds for ``time``) and ``T_k`` the same measure summed over every worker on the GPU (from the
load counters). When the counters agree with the spans, the shares of all spans in an interval
add up to one, which is what makes ``attributed + idle = measured`` hold per GPU.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from carbonspan.processors import semconv
from carbonspan.processors.series import CumulativeSeries

POLICY_TOKENS = "tokens"
POLICY_TIME = "time"
POLICIES = (POLICY_TOKENS, POLICY_TIME)
POLICY_LOAD_METRIC = {
    POLICY_TOKENS: semconv.CARBON_WORKER_TOKENS,
    POLICY_TIME: semconv.CARBON_WORKER_REQUEST_TIME,
}

#: load curve of a GPU at the given times, or None when no worker reports load for it.
LoadCurve = Callable[[np.ndarray], "np.ndarray | None"]


@dataclass(frozen=True)
class GpuAttribution:
    energy_j: float
    gpu_seconds: float  # the span's share of the GPU's time, for amortising embodied carbon
    window_energy_j: float  # all of the GPU's energy over the intervals the span touched
    quality: str


def _edges(series: CumulativeSeries, a: int, b: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """Interval edges covering [a, b] and the cumulative energy at each; True if extrapolated."""
    t, c = series.curve()
    n = len(t)
    i0 = int(np.searchsorted(t, a, side="right")) - 1
    i1 = int(np.searchsorted(t, b, side="left"))
    lo, hi = max(i0, 0), min(i1, n - 1)
    if lo > hi:  # the whole span lies before the first or after the last sample
        lo = hi = 0 if i0 < 0 else n - 1
    edges = list(t[lo : hi + 1])
    cum = list(c[lo : hi + 1])
    extrapolated = False
    if a < t[0]:
        edges.insert(0, a)
        cum.insert(0, c[0] - series.first_rate() * (t[0] - a) * 1e-9)
        extrapolated = True
    if b > t[-1]:
        edges.append(b)
        cum.append(c[-1] + series.last_rate() * (b - t[-1]) * 1e-9)
        extrapolated = True
    return np.asarray(edges, dtype=np.int64), np.asarray(cum, dtype=np.float64), extrapolated


def span_measure_per_interval(edges: np.ndarray, a: int, b: int, measure: float) -> np.ndarray:
    """The span's measure in each interval, spread evenly over [a, b]."""
    overlap = np.clip(np.minimum(edges[1:], b) - np.maximum(edges[:-1], a), 0, None).astype(np.float64)
    if b > a:
        return measure * overlap / (b - a)
    inside = (edges[:-1] <= a) & (a <= edges[1:])  # a zero-length span counts where it sits
    out = np.zeros(len(overlap))
    if inside.any():
        out[int(np.argmax(inside))] = measure
    return out


def interval_shares(span_measure: np.ndarray, load_delta: np.ndarray | None, overlap_s: np.ndarray,
                    dt_s: np.ndarray) -> np.ndarray:
    """Fraction of each interval's energy that is the span's.

    Without load counters for the GPU the span is taken to own the GPU while it runs (an upper
    bound; the docs say to run the vLLM plugin so that batches are split).
    """
    if load_delta is None:
        return np.divide(overlap_s, dt_s, out=np.zeros_like(overlap_s), where=dt_s > 0)
    shares = np.divide(span_measure, load_delta, out=np.zeros_like(span_measure), where=load_delta > 0)
    return np.minimum(shares, 1.0)


def attribute_measured(series: CumulativeSeries, load: LoadCurve, a: int, b: int, measure: float,
                       gap_ns: int) -> GpuAttribution:
    edges, cum, extrapolated = _edges(series, a, b)
    energy = np.diff(cum)
    dt = np.diff(edges)
    dt_s = dt * 1e-9
    overlap_s = np.clip(np.minimum(edges[1:], b) - np.maximum(edges[:-1], a), 0, None) * 1e-9
    load_curve = load(edges)
    load_delta = None if load_curve is None else np.diff(load_curve)
    shares = interval_shares(span_measure_per_interval(edges, a, b, measure), load_delta, overlap_s, dt_s)
    if extrapolated:
        quality = semconv.QUALITY_EXTRAPOLATED
    elif bool(np.any(dt > gap_ns)):
        quality = semconv.QUALITY_INTERPOLATED
    else:
        quality = semconv.QUALITY_MEASURED
    return GpuAttribution(
        energy_j=float(np.dot(energy, shares)),
        gpu_seconds=float(np.dot(dt_s, shares)),
        window_energy_j=float(energy.sum()),
        quality=quality,
    )


def attribute_estimated(power_w: float, load: LoadCurve, a: int, b: int, measure: float) -> GpuAttribution:
    """No energy data for the GPU: its power model over the window, shared as the counters say."""
    edges = np.array([a, b], dtype=np.int64)
    duration_s = (b - a) * 1e-9
    load_curve = load(edges)
    load_delta = None if load_curve is None else np.diff(load_curve)
    span = np.array([measure])
    dt_s = np.array([duration_s])
    share = interval_shares(span, load_delta, dt_s, dt_s)
    if load_delta is not None and load_delta[0] <= 0:
        share = np.ones(1)  # counters silent too: charge the span the whole estimate
    window = power_w * duration_s
    return GpuAttribution(
        energy_j=float(window * share[0]),
        gpu_seconds=float(duration_s * share[0]),
        window_energy_j=window,
        quality=semconv.QUALITY_ESTIMATED,
    )
