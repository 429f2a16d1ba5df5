"""Per-GPU energy accounts: measured, attributed to spans, idle.

Measured and idle energy are booked interval by interval as the GPU's data arrives, on the same
sampling intervals the spans are priced on; an interval in which the GPU's workers did no work
is idle. Attributed energy is booked as spans are enriched. With complete data,
attributed + idle = measured per GPU: the invariant the tests check.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass

from carbonspan.processors.attribution import pieces
from carbonspan.processors.gpu_profiles import normalize_gpu_model
from carbonspan.processors.telemetry import Telemetry


@dataclass(frozen=True)
class GpuLedger:
    gpu_id: str
    model: str | None
    provider: str | None
    region: str | None
    measured_j: float
    attributed_j: float
    idle_j: float
    last_sample_ns: int | None


@dataclass
class _Account:
    measured_j: float = 0.0
    attributed_j: float = 0.0
    idle_j: float = 0.0
    booked_until_ns: int | None = None


class Ledger:
    def __init__(self) -> None:
        self._accounts: dict[str, _Account] = {}

    def attribute(self, gpu_id: str, energy_j: float) -> None:
        account = self._accounts.get(gpu_id)
        if account is None:  # not setdefault: that would build an account for every span
            account = self._accounts[gpu_id] = _Account()
        account.attributed_j += energy_j

    def idle_per_busy_joule(self, gpu_id: str) -> float:
        """Idle energy per joule of busy energy, over the GPU's booked history: the factor that
        spreads idle energy over the requests in proportion to their own energy."""
        account = self._accounts.get(gpu_id)
        if account is None:
            return 0.0
        busy = account.measured_j - account.idle_j
        return account.idle_j / busy if busy > 0 else 0.0

    def advance(self, telemetry: Telemetry, load_metric: str, idle_watts: Callable[[str], float | None]) -> None:
        """Book every sampling interval whose energy and load data have both arrived."""
        for gpu_id, info in telemetry.gpus.items():
            series = info.series
            if series is None or len(series) < 2:
                continue
            account = self._accounts.setdefault(gpu_id, _Account())
            load_newest = telemetry.load_newest_ns(gpu_id, load_metric)
            until = series.newest_ns if load_newest is None else min(series.newest_ns, load_newest)
            times, cum = series.points()
            start = times[0] if account.booked_until_ns is None else account.booked_until_ns
            lo = bisect.bisect_left(times, start)
            hi = bisect.bisect_right(times, until)
            if hi - lo < 2:
                continue
            booked = pieces(
                times[lo:hi],
                cum[lo:hi],
                lambda edges, g=gpu_id: telemetry.load_at(g, load_metric, edges),
                lambda a, b, g=gpu_id: telemetry.load_breakpoints(g, load_metric, a, b),
                idle_watts(gpu_id),
            )
            for piece in booked:
                account.measured_j += piece.energy_j
                # No worker reports load for this GPU: none of its energy is known to be work.
                if piece.load is None or piece.load <= 0:
                    account.idle_j += piece.energy_j
            account.booked_until_ns = times[hi - 1]

    def rows(self, telemetry: Telemetry) -> list[GpuLedger]:
        rows = []
        for gpu_id, account in self._accounts.items():
            info = telemetry.gpus.get(gpu_id)
            series = info.series if info else None
            rows.append(
                GpuLedger(
                    gpu_id=gpu_id,
                    model=(normalize_gpu_model(info.model) or info.model) if info and info.model else None,
                    provider=info.provider if info else None,
                    region=info.region if info else None,
                    measured_j=account.measured_j,
                    attributed_j=account.attributed_j,
                    idle_j=account.idle_j,
                    last_sample_ns=series.newest_ns if series else None,
                )
            )
        return rows
