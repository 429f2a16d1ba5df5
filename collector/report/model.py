"""What a report holds: per-request rows, breakdowns, GPU energy accounts and counterfactuals.

Plain frozen data, so that the table, the HTML page and the demo read the same figures and none
of them recomputes anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from carbonspan.collector.report.load import BadLine
from carbonspan.processors import semconv


@dataclass(frozen=True)
class SpanRow:
    """One span as the waterfall draws it. ``quality`` is None for a span the join did not price."""

    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    service: str | None
    provider: str | None
    region: str | None
    phase: str | None
    gpu_model: str | None
    gpu_count: int
    start_ns: int
    end_ns: int
    tokens: float  # tokens the span computed (carbon.tokens, else the phase's gen_ai.usage count)
    energy_j: float
    facility_j: float
    operational_g: float
    embodied_g: float
    total_g: float
    quality: str | None
    pue: float | None
    intensity: float | None
    intensity_source: str | None
    #: region -> carbon.counterfactual.<region>.gco2e written by the join, where it wrote any.
    counterfactual_g: dict[str, float] = field(default_factory=dict)
    depth: int = 0  # nesting under the trace's root, for the waterfall

    @property
    def priced(self) -> bool:
        return self.quality is not None


@dataclass(frozen=True)
class Figures:
    energy_j: float
    total_g: float


@dataclass(frozen=True)
class Counterfactual:
    """A request's gCO2e had it run elsewhere; ``total_g`` is None when it cannot be priced, and
    ``basis`` says how it was obtained or why not."""

    total_g: float | None
    basis: str


@dataclass(frozen=True)
class RequestRow:
    trace_id: str
    name: str
    service: str | None
    model: str | None
    route: str
    quality: str | None
    start_ns: int
    end_ns: int
    input_tokens: float
    output_tokens: float
    energy_j: float
    operational_g: float
    embodied_g: float
    total_g: float
    by_phase: dict[str, Figures]
    by_region: dict[str, Figures]
    spans: tuple[SpanRow, ...]
    region_counterfactuals: dict[str, Counterfactual]
    gpu_counterfactuals: dict[str, Counterfactual]


@dataclass(frozen=True)
class Breakdown:
    """Priced spans summed by one key (a region or a GPU model)."""

    key: str
    spans: int
    requests: int
    energy_j: float
    facility_j: float
    operational_g: float
    embodied_g: float
    total_g: float
    energy_by_phase: dict[str, float]
    tokens_by_phase: dict[str, float]
    #: embodied gCO2e by phase, for the per-token figures of GPU counterfactuals.
    embodied_by_phase: dict[str, float]

    @property
    def tokens(self) -> float:
        return sum(self.tokens_by_phase.values())

    @property
    def g_per_1k_tokens(self) -> float | None:
        return self.total_g / self.tokens * 1000 if self.tokens > 0 else None

    @property
    def mean_intensity(self) -> float | None:
        """gCO2e/kWh over the facility energy: the energy-weighted grid intensity these spans saw."""
        return self.operational_g / self.facility_j * 3.6e6 if self.facility_j > 0 else None

    def joules_per_token(self, phase: str) -> float | None:
        tokens = self.tokens_by_phase.get(phase, 0.0)
        return self.energy_by_phase.get(phase, 0.0) / tokens if tokens > 0 else None


@dataclass(frozen=True)
class GpuEnergyRow:
    """One GPU's account from the carbon.gpu.* counters: what it drew, what went to requests, idle."""

    gpu_id: str
    model: str | None
    region: str | None
    measured_j: float | None
    attributed_j: float | None
    idle_j: float | None

    @property
    def idle_share(self) -> float | None:
        if self.idle_j is None or not self.measured_j:
            return None
        return self.idle_j / self.measured_j


@dataclass(frozen=True)
class RegionPricing:
    """The table rows a computed region counterfactual used (one row per distinct reading)."""

    provider: str | None
    region: str
    pue: float
    pue_source: str
    intensity: float
    intensity_source: str
    zone: str | None


@dataclass(frozen=True)
class Report:
    requests: tuple[RequestRow, ...]  # by start time
    regions: tuple[Breakdown, ...]
    gpu_models: tuple[Breakdown, ...]
    gpu_energy: tuple[GpuEnergyRow, ...]
    #: why idle vs attributed energy is not shown, when the input has no carbon.gpu.* counters.
    gpu_energy_note: str | None
    counterfactual_regions: tuple[str, ...]
    counterfactual_gpus: tuple[str, ...]
    region_pricing: tuple[RegionPricing, ...]
    #: GPU model -> phase -> J/token measured in the input: what GPU counterfactuals use.
    gpu_joules_per_token: dict[str, dict[str, float]]
    spans: int
    unpriced_spans: int
    #: traces without a single carbon.phase span (no LLM request in them): counted, not listed.
    other_traces: int = 0
    bad_lines: tuple[BadLine, ...] = ()
    source: str | None = None  # the file read, when there was one

    @property
    def other_traces_note(self) -> str:
        return f" {self.other_traces} traces without request phases left out." if self.other_traces else ""

    @property
    def energy_j(self) -> float:
        return sum(r.energy_j for r in self.requests)

    @property
    def operational_g(self) -> float:
        return sum(r.operational_g for r in self.requests)

    @property
    def embodied_g(self) -> float:
        return sum(r.embodied_g for r in self.requests)

    @property
    def total_g(self) -> float:
        return sum(r.total_g for r in self.requests)

    @property
    def phases(self) -> tuple[str, ...]:
        """Phases that carry energy or CO2 in some request, in the order of semconv.PHASES."""
        seen = {p for r in self.requests for p, f in r.by_phase.items() if f.energy_j or f.total_g}
        return tuple(p for p in semconv.PHASES if p in seen)

    @property
    def region_names(self) -> tuple[str, ...]:
        return tuple(b.key for b in self.regions)

    def phase_total(self, phase: str) -> Figures:
        figures = [f for r in self.requests if (f := r.by_phase.get(phase))]
        return Figures(sum(f.energy_j for f in figures), sum(f.total_g for f in figures))

    def region_total(self, region: str) -> Figures:
        figures = [f for r in self.requests if (f := r.by_region.get(region))]
        return Figures(sum(f.energy_j for f in figures), sum(f.total_g for f in figures))

    def heaviest(self, top: int | None) -> tuple[RequestRow, ...]:
        """The ``top`` requests with the most gCO2e (all when None), heaviest first."""
        ranked = sorted(self.requests, key=lambda r: r.total_g, reverse=True)
        return tuple(ranked if top is None else ranked[:top])
