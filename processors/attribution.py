"""A span's share of one GPU's energy over its time window.

The GPU's energy is only known per sampling interval, so the share is decided per interval:
in interval k the span gets ``s_k / T_k`` of the energy ``E_k``, where ``s_k`` is the span's own
measure in the interval (its tokens, spread evenly over the span, for the ``tokens`` policy; its
seconds for ``time``) and ``T_k`` the same measure summed over every worker on the GPU (from the
load counters). When the counters agree with the spans, the shares of all spans in an interval
add up to one, which is what makes ``attributed + idle = measured`` hold per GPU.

A span touches a handful of intervals, so this is plain Python over lists: numpy's per-call
overhead on arrays this small cost more than the arithmetic (bench/join_hotpath.py).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass

from carbonspan.processors import semconv
from carbonspan.processors.series import CumulativeSeries

POLICY_TOKENS = "tokens"
POLICY_TIME = "time"
POLICIES = (POLICY_TOKENS, POLICY_TIME)
POLICY_LOAD_METRIC = {
    POLICY_TOKENS: semconv.CARBON_WORKER_TOKENS,
    POLICY_TIME: semconv.CARBON_WORKER_REQUEST_TIME,
}

#: load curve of a GPU at the given sorted times, or None when no worker reports load for it.
LoadCurve = Callable[[list[int]], "list[float] | None"]


@dataclass(frozen=True)
class GpuAttribution:
    energy_j: float
    gpu_seconds: float  # the span's share of the GPU's time, for amortising embodied carbon
    window_energy_j: float  # all of the GPU's energy over the intervals the span touched
    quality: str


def _edges(series: CumulativeSeries, a: int, b: int) -> tuple[list[int], list[float], bool]:
    """Interval edges covering [a, b] and the cumulative energy at each; True if extrapolated."""
    times, cum = series.points()
    n = len(times)
    i0 = bisect.bisect_right(times, a) - 1
    i1 = bisect.bisect_left(times, b)
    lo, hi = max(i0, 0), min(i1, n - 1)
    if lo > hi:  # the whole span lies before the first or after the last sample
        lo = hi = 0 if i0 < 0 else n - 1
    edges = times[lo : hi + 1]
    values = cum[lo : hi + 1]
    extrapolated = False
    if a < times[0]:
        edges.insert(0, a)
        values.insert(0, cum[0] - series.first_rate() * (times[0] - a) * 1e-9)
        extrapolated = True
    if b > times[-1]:
        edges.append(b)
        values.append(cum[-1] + series.last_rate() * (b - times[-1]) * 1e-9)
        extrapolated = True
    return edges, values, extrapolated


def _share(span_measure: float, load_delta: float | None, overlap_ns: int, dt_ns: int) -> float:
    """Fraction of an interval's energy that is the span's.

    Without load counters for the GPU the span is taken to own the GPU while it runs (an upper
    bound; the docs say to run the vLLM plugin so that batches are split).
    """
    if load_delta is None:
        return overlap_ns / dt_ns if dt_ns > 0 else 0.0
    if load_delta <= 0:
        return 0.0
    return min(span_measure / load_delta, 1.0)


def attribute_measured(series: CumulativeSeries, load: LoadCurve, a: int, b: int, measure: float,
                       gap_ns: int) -> GpuAttribution:
    edges, values, extrapolated = _edges(series, a, b)
    load_values = load(edges)
    length = b - a
    window = attributed = gpu_seconds = 0.0
    gap = False
    placed = False  # a zero-length span counts once, in the first interval that holds it
    for k in range(len(edges) - 1):
        t0, t1 = edges[k], edges[k + 1]
        energy = values[k + 1] - values[k]
        dt = t1 - t0
        window += energy
        gap = gap or dt > gap_ns
        overlap = min(t1, b) - max(t0, a)
        if length > 0:
            if overlap <= 0:
                continue
            span_measure = measure * overlap / length
        elif not placed and t0 <= a <= t1:
            span_measure, placed = measure, True
        else:
            continue
        delta = None if load_values is None else load_values[k + 1] - load_values[k]
        share = _share(span_measure, delta, max(overlap, 0), dt)
        attributed += energy * share
        gpu_seconds += dt * 1e-9 * share
    if extrapolated:
        quality = semconv.QUALITY_EXTRAPOLATED
    elif gap:
        quality = semconv.QUALITY_INTERPOLATED
    else:
        quality = semconv.QUALITY_MEASURED
    return GpuAttribution(attributed, gpu_seconds, window, quality)


def attribute_estimated(power_w: float, load: LoadCurve, a: int, b: int, measure: float) -> GpuAttribution:
    """No energy data for the GPU: its power model over the window, shared as the counters say."""
    duration_s = (b - a) * 1e-9
    load_values = load([a, b])
    delta = None if load_values is None else load_values[1] - load_values[0]
    # counters silent too (or absent): charge the span the whole estimate
    share = 1.0 if not delta or delta <= 0 else _share(measure, delta, b - a, b - a)
    window = power_w * duration_s
    return GpuAttribution(window * share, duration_s * share, window, semconv.QUALITY_ESTIMATED)
