"""A span's share of one GPU's energy over its time window.

The GPU's energy is only known per sampling interval, so the share is decided per interval:
in interval k the span gets ``s_k / T_k`` of the energy ``E_k``, where ``s_k`` is the span's own
measure in the interval (its tokens, spread evenly over the span, for the ``tokens`` policy; its
seconds for ``time``) and ``T_k`` the same measure summed over every worker on the GPU (from the
load counters). When the counters agree with the spans, the shares of all spans in an interval
add up to one, which is what makes ``attributed + idle = measured`` hold per GPU.

Two ways to the same figures. ``attribute_measured`` walks the pieces of one span in plain
Python (a span touches a handful of intervals: numpy's per-call overhead would cost more than
the arithmetic): exact in every case, and the reference. ``WindowPricer`` serves the many spans
released together on one GPU: it cuts the GPU's intervals once over the stretch they cover and
keeps each piece's densities and integrals, so that all the spans are priced with a few numpy
calls (searches and per-span sums); where a share would reach its cap of one (the counters say
the GPU did less work than the span claims), or a span is not inside the stretch, it says so and
the walk decides.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

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

#: load curve of a GPU at the given sorted times, or None when no worker reports load for it.
LoadCurve = Callable[[list[int]], "list[float] | None"]


class GpuAttribution(NamedTuple):
    """A tuple, not a frozen dataclass: one is made per span and GPU, and a frozen dataclass's
    ``__init__`` (one ``object.__setattr__`` per field) cost more than the pricing itself."""

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


@dataclass(frozen=True, slots=True)
class Piece:
    """Part of a sampling interval between two load points, with its estimated energy."""

    start: int
    end: int
    energy_j: float
    load: float | None  # work the GPU's workers did in it; None where no worker reports for the GPU


#: the GPU's load data: edges -> cumulative work at each (None: no worker reports for the GPU), and
#: [lo, hi] -> the times of load points strictly inside.
LoadBreakpoints = Callable[[int, int], list[int]]


def pieces(edges: list[int], values: list[float], load: LoadCurve, breakpoints: LoadBreakpoints,
           idle_w: float | None) -> list[Piece]:
    """Split each sampling interval at the load points inside it.

    The energy counter only says how much the GPU drew over the whole interval; the load points
    say when inside it the GPU worked. Sub-intervals without work get the GPU's idle power, the
    rest of the interval's energy goes to the busy sub-intervals in proportion to their length
    (without an idle power figure, everything is shared by time). Without this, a 10 ms prefill
    chunk would take its token share of a whole 100 ms interval, idle time included.
    """
    bps = breakpoints(edges[0], edges[-1]) if len(edges) > 1 else []
    all_edges = sorted(set(edges).union(bps)) if bps else edges
    work = load(all_edges)
    out: list[Piece] = []
    j = 0
    for k in range(len(edges) - 1):
        t0, t1, energy = edges[k], edges[k + 1], values[k + 1] - values[k]
        first = j
        while all_edges[j] < t1:
            j += 1
        if work is None:
            out.append(Piece(t0, t1, energy, None))
            continue
        if j - first == 1:
            out.append(Piece(t0, t1, energy, work[j] - work[first]))
            continue
        subs = [(all_edges[i], all_edges[i + 1], work[i + 1] - work[i]) for i in range(first, j)]
        idle_ns = sum(e - s for s, e, w in subs if w <= 0)
        busy_ns = (t1 - t0) - idle_ns
        if idle_ns and busy_ns:
            idle_j = energy * idle_ns / (t1 - t0) if idle_w is None else min(energy, idle_w * idle_ns * 1e-9)
            busy_j = energy - idle_j
        else:
            idle_j = busy_j = energy  # all idle or all busy: shared by time
        for s0, s1, w in subs:
            part = (idle_j / idle_ns if w <= 0 else busy_j / busy_ns) * (s1 - s0)
            out.append(Piece(s0, s1, part, w))
    return out


def _share(span_measure: float, load_delta: float | None, overlap_ns: int, dt_ns: int) -> float:
    """Fraction of a piece's energy that is the span's.

    Without load counters for the GPU the span is taken to own the GPU while it runs (an upper
    bound; the docs say to run the vLLM plugin so that batches are split).
    """
    if load_delta is None:
        return overlap_ns / dt_ns if dt_ns > 0 else 0.0
    if load_delta <= 0:
        return 0.0
    return min(span_measure / load_delta, 1.0)


#: per piece (given the pieces' boundaries), the tokens one running request of the span's phase
#: computed per second in it, or None when the GPU's workers do not report it.
PhaseRate = Callable[[list[int]], "list[float] | None"]


def _spread(cut: list[Piece], a: int, b: int, measure: float, phase_rate: PhaseRate | None) -> list[float]:
    """The span's measure in each piece.

    Evenly over the span's time, unless the workers' counters say how fast one request of the
    span's phase made tokens in each piece (phase tokens / phase request-seconds): then in
    proportion to that rate. A decode sequence makes one token per step whatever the step's
    length, so a step stretched by a prefill chunk must not give it more of its tokens.
    """
    overlaps = []
    for p in cut:  # max(min(end, b) - max(start, a), 0) without the builtins' call overhead (ints: same values)
        o = (p.end if p.end < b else b) - (p.start if p.start > a else a)
        overlaps.append(o if o > 0 else 0)
    length = b - a
    rates = phase_rate([cut[0].start] + [p.end for p in cut]) if phase_rate is not None and cut else None
    if rates is not None:
        weights = [o * r for o, r in zip(overlaps, rates, strict=True)]
        total = sum(weights)
        if total > 0:
            return [measure * w / total for w in weights]
    return [measure * o / length for o in overlaps]


def attribute_measured(series: CumulativeSeries, load: LoadCurve, breakpoints: LoadBreakpoints, a: int, b: int,
                       measure: float, gap_ns: int, idle_w: float | None,
                       phase_rate: PhaseRate | None = None) -> GpuAttribution:
    edges, values, extrapolated = _edges(series, a, b)
    cut = pieces(edges, values, load, breakpoints, idle_w)
    gap = any(t1 - t0 > gap_ns for t0, t1 in zip(edges, edges[1:], strict=False))
    length = b - a
    window = attributed = gpu_seconds = 0.0
    placed = False  # a zero-length span counts once, in the first piece that holds it
    spread = _spread(cut, a, b, measure, phase_rate) if length > 0 else None
    for k, piece in enumerate(cut):
        window += piece.energy_j
        overlap = (piece.end if piece.end < b else b) - (piece.start if piece.start > a else a)
        if spread is not None:
            if overlap <= 0:
                continue
            span_measure = spread[k]
        elif not placed and piece.start <= a <= piece.end:
            span_measure, placed = measure, True
        else:
            continue
        dt = piece.end - piece.start
        work = piece.load  # _share, inlined: this loop runs for every piece of every span on every GPU
        if work is None:
            share = max(overlap, 0) / dt if dt > 0 else 0.0
        else:
            share = 0.0 if work <= 0 else min(span_measure / work, 1.0)
        attributed += piece.energy_j * share
        gpu_seconds += dt * 1e-9 * share
    return GpuAttribution(attributed, gpu_seconds, window, _quality(extrapolated, gap))


def _quality(extrapolated: bool, gap: bool) -> str:
    if extrapolated:
        return semconv.QUALITY_EXTRAPOLATED
    return semconv.QUALITY_INTERPOLATED if gap else semconv.QUALITY_MEASURED


#: a share above this is capped (the walk decides); the slack keeps a span that is alone on the
#: GPU, whose shares are one up to rounding, on the fast path: it changes a figure by < 1e-9.
_CAP = 1.0 + 1e-9


@dataclass(frozen=True, slots=True)
class _Sums:
    """Densities per piece, and their integrals over each piece, of one weighting (``rates``: the
    phase's tokens per request-second per piece; None: weighted by time alone). For a span inside
    the window with tokens m and weight R = its integral of the rate, piece j's share of its energy
    is m x o_j x r_j / (R x W_j) (o_j: the span's overlap with the piece, W_j: the piece's work), so
    the span's energy is m / R times the integral of E_j x r_j / W_j over the span. Without load
    counters a piece's share is o_j / dt_j.

    A span's integral is summed from its own pieces (partial ends, whole pieces between), never
    taken as a difference of running totals from the window's start: every term is non-negative,
    so the sum is exact to rounding of the span's own figure. A difference would lose the figure of
    a small span behind a large total (one piece with almost no work makes a huge density)."""

    weight: tuple[np.ndarray, np.ndarray]  # (density, per-piece integral with a 0 after the last) of r
    energy: tuple[np.ndarray, np.ndarray]  # of E r / W (no load: E / dt)
    seconds: tuple[np.ndarray, np.ndarray]  # of dt r / W x 1e-9 (no load: 1e-9)
    peak: np.ndarray  # per piece dt r / W (and a 0 after the last): a span's share is at most m / R x this


class PricedSpans(NamedTuple):
    """Per span: its attribution on the GPU where ``ok``; elsewhere ``attribute_measured`` decides."""

    energy_j: np.ndarray
    gpu_seconds: np.ndarray
    window_energy_j: np.ndarray
    interpolated: np.ndarray  # a sampling interval longer than the gap inside the span's window
    ok: np.ndarray


class _SpanPieces:
    """Where each span lies among the pieces: its first and last piece, how much of each it covers,
    and the pieces wholly inside it, for sums of per-piece figures by ``np.add.reduceat``.

    reduceat also sums the stretches between consecutive ranges; with the spans in start order
    those stretches add up to at most the window, so the caller sorts them."""

    def __init__(self, bounds: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
        last_piece = len(bounds) - 2
        self.first = np.clip(np.searchsorted(bounds, a, "right") - 1, 0, last_piece)
        self.last = np.clip(np.searchsorted(bounds, b, "left") - 1, 0, last_piece)
        one_piece = self.first == self.last
        self.head_ns = np.where(one_piece, b - a, bounds[self.first + 1] - a).astype(float)
        self.tail_ns = np.where(one_piece, 0, b - bounds[self.last]).astype(float)
        self.has_inner = self.last > self.first + 1
        self._inner = np.stack([self.first + 1, self.last], axis=1).ravel()
        self._covered = np.stack([self.first, self.last + 1], axis=1).ravel()

    def integral(self, sums: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        """Of the piecewise-constant density over each span: its ends plus the whole pieces between."""
        density, per_piece = sums
        inner = np.where(self.has_inner, np.add.reduceat(per_piece, self._inner)[::2], 0.0)
        return self.head_ns * density[self.first] + inner + self.tail_ns * density[self.last]

    def peak(self, per_piece: np.ndarray) -> np.ndarray:
        """The largest per-piece figure over the pieces each span touches."""
        return np.maximum.reduceat(per_piece, self._covered)[::2]


class WindowPricer:
    """One GPU's pieces between ``lo`` and ``hi`` (clipped to its series, which must have two
    points) with their integrals per weighting, for ``price``. Built per release from the
    telemetry as it is then; prices all the release's spans on the GPU in one go."""

    def __init__(self, series: CumulativeSeries, load: LoadCurve, breakpoints: LoadBreakpoints, lo: int, hi: int,
                 gap_ns: int, idle_w: float | None, phase_rate: Callable[[str, list[int]], list[float] | None]) -> None:
        times, cum = series.points()
        i0 = min(max(bisect.bisect_right(times, lo) - 1, 0), len(times) - 2)  # at least one interval
        i1 = min(max(bisect.bisect_left(times, hi), i0 + 1), len(times) - 1)
        edges = times[i0 : i1 + 1]
        self.cut = pieces(edges, cum[i0 : i1 + 1], load, breakpoints, idle_w)
        self.edges = np.array(edges, dtype=np.int64)
        self.cum = np.array(cum[i0 : i1 + 1])
        # running count of the intervals longer than gap_ns
        self.gaps = np.concatenate([[0], np.cumsum(np.diff(self.edges) > gap_ns)])
        self.bounds_list = [self.cut[0].start] + [p.end for p in self.cut]
        self.bounds = np.array(self.bounds_list, dtype=np.int64)
        self.has_load = self.cut[0].load is not None
        # per piece, shared by every weighting: its length, energy and work
        self._dt = np.diff(self.bounds).astype(float)
        self._energy = np.array([p.energy_j for p in self.cut])
        self._work = np.array([p.load for p in self.cut], dtype=float) if self.has_load else None
        self._phase_rate = phase_rate
        self._sums: dict[str | None, _Sums | None] = {}

    def _weighted(self, phase: str | None) -> _Sums | None:
        if phase not in self._sums:
            rates = self._phase_rate(phase, self.bounds_list) if phase is not None else [1.0] * len(self.cut)
            self._sums[phase] = None if rates is None else self._piece_sums(np.asarray(rates, dtype=float))
        return self._sums[phase]

    def _piece_sums(self, rates: np.ndarray) -> _Sums:
        dt, energy, work = self._dt, self._energy, self._work
        if work is None:
            e, s, h = energy / dt, np.full(len(dt), 1e-9), np.zeros(len(dt))
        else:
            # r / W; no work: no share. A piece with almost no work may overflow to inf: a span on it
            # would take a capped share or an infinite figure, and price() declines both.
            per_work = np.divide(rates, work, out=np.zeros(len(dt)), where=work > 0)
            e, s, h = energy * per_work, dt * 1e-9 * per_work, dt * per_work

        def with_integrals(density: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return density, np.append(dt * density, 0.0)

        return _Sums(with_integrals(rates), with_integrals(e), with_integrals(s), np.append(h, 0.0))

    @np.errstate(over="ignore", invalid="ignore")  # the per-piece sums are built here too, on first use
    def price(self, a: np.ndarray, b: np.ndarray, measure: np.ndarray, phase: str | None) -> PricedSpans:
        """Spans [a, b] (int64 ns) with their measures; not ``ok`` where the span is not inside the
        window, has no length, or a share would be capped or its figures are not finite (overflow
        and its NaNs are expected there, hence the silenced warnings)."""
        order = np.argsort(a, kind="stable")
        a, b, measure = a[order], b[order], measure[order]
        edges = self.edges
        ok = (edges[0] <= a) & (a < b) & (b <= edges[-1])
        last_edge = len(edges) - 1
        i0 = np.clip(np.searchsorted(edges, a, "right") - 1, 0, last_edge)
        i1 = np.clip(np.searchsorted(edges, b, "left"), 0, last_edge)
        spans = _SpanPieces(self.bounds, a, b)

        time_sums = self._weighted(None)
        weighted = self._weighted(phase) if phase is not None and self.has_load else None
        # no phase rate, or none over the span: spread by time
        total = spans.integral(weighted.weight) if weighted is not None else np.zeros(len(a))
        by_time = total <= 0
        total = np.where(by_time, (b - a).astype(float), total)

        def pick(field: str) -> np.ndarray:
            by_rate = spans.integral(getattr(weighted, field)) if weighted is not None else 0.0
            return np.where(by_time, spans.integral(getattr(time_sums, field)), by_rate)

        energy, seconds = pick("energy"), pick("seconds")
        if self.has_load:
            scale = np.divide(measure, total, out=np.zeros(len(a)), where=total > 0)
            energy, seconds = energy * scale, seconds * scale
            peak = spans.peak(time_sums.peak)
            if weighted is not None:
                peak = np.where(by_time, peak, spans.peak(weighted.peak))
            ok &= (scale * peak <= _CAP) & np.isfinite(energy) & np.isfinite(seconds)
        in_order = np.empty_like(order)
        in_order[order] = np.arange(len(order))
        return PricedSpans(energy[in_order], seconds[in_order], (self.cum[i1] - self.cum[i0])[in_order],
                           (self.gaps[i1] > self.gaps[i0])[in_order], ok[in_order])


def attribute_estimated(power_w: float, load: LoadCurve, a: int, b: int, measure: float) -> GpuAttribution:
    """No energy data for the GPU: its power model over the window, shared as the counters say."""
    duration_s = (b - a) * 1e-9
    load_values = load([a, b])
    delta = None if load_values is None else load_values[1] - load_values[0]
    # counters silent too (or absent): charge the span the whole estimate
    share = 1.0 if not delta or delta <= 0 else _share(measure, delta, b - a, b - a)
    window = power_w * duration_s
    return GpuAttribution(window * share, duration_s * share, window, semconv.QUALITY_ESTIMATED)
