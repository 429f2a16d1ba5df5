"""What a request would have emitted elsewhere: on another region's grid, or on another GPU type.

Region: the same energy, × that region's PUE and grid intensity, + the same embodied carbon. The
join writes this onto spans as ``carbon.counterfactual.<region>.gco2e`` when configured to; where a
span has it, it is used as is, otherwise it is computed here from the facility and intensity
tables, and the rows used are kept (:class:`RegionPricing`) so the report can name them.

GPU type: each compute span's tokens × that GPU type's measured J/token for the span's phase
(from the spans in the same input whose energy was measured, not estimated), priced at the span's
own PUE and grid intensity, + that GPU type's embodied gCO2e per token for the phase.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from carbonspan.collector.report.model import Breakdown, Counterfactual, RegionPricing, SpanRow
from carbonspan.processors import semconv
from carbonspan.processors.facility import FacilityTables
from carbonspan.processors.intensity import GridLocation, IntensityProvider
from carbonspan.processors.join import J_PER_KWH

BASIS_ATTRIBUTES = "span attributes"
BASIS_COMPUTED = "energy × PUE × intensity"
BASIS_MEASURED_J_PER_TOKEN = "measured J/token"


class RegionPricer:
    """Prices spans in other regions with the tables, remembering every row it used."""

    def __init__(self, intensity: IntensityProvider, facility: FacilityTables) -> None:
        self._intensity = intensity
        self._facility = facility
        self._used: dict[RegionPricing, None] = {}

    @property
    def used(self) -> tuple[RegionPricing, ...]:
        return tuple(self._used)

    def span_gco2e(self, span: SpanRow, provider: str, region: str) -> float:
        pue, pue_source = self._facility.pue(provider, region)
        reading = self._intensity.intensity(GridLocation(provider, region, None), (span.start_ns + span.end_ns) // 2)
        self._used[RegionPricing(provider, region, pue, pue_source, reading.gco2e_per_kwh, reading.source,
                                 reading.zone)] = None
        return span.energy_j * pue / J_PER_KWH * reading.gco2e_per_kwh + span.embodied_g


def default_regions(spans: Iterable[SpanRow]) -> list[tuple[str | None, str]]:
    """Every region the priced spans ran in or were priced against, with its provider where known."""
    providers: dict[str, str | None] = {}
    for span in spans:
        if not span.priced:
            continue
        if span.region and providers.get(span.region) is None:
            providers[span.region] = span.provider
        for region in span.counterfactual_g:
            providers.setdefault(region, None)
    return [(provider, region) for region, provider in sorted(providers.items())]


def region_counterfactual(spans: Sequence[SpanRow], provider: str | None, region: str,
                          pricer: RegionPricer) -> Counterfactual:
    total = 0.0
    from_attributes = computed = 0
    for span in spans:
        if not span.priced:
            continue
        if region in span.counterfactual_g:
            total += span.counterfactual_g[region]
            from_attributes += 1
        elif provider is None:
            return Counterfactual(None, f"no cloud.provider known for {region}, and no "
                                        f"{semconv.counterfactual_attribute(region)} on every span")
        else:
            total += pricer.span_gco2e(span, provider, region)
            computed += 1
    if from_attributes and computed:
        basis = f"{from_attributes} spans from {BASIS_ATTRIBUTES}, {computed} by {BASIS_COMPUTED}"
    else:
        basis = BASIS_ATTRIBUTES if from_attributes else BASIS_COMPUTED
    return Counterfactual(total, basis)


def gpu_counterfactual(spans: Sequence[SpanRow], model: str, measured: Breakdown) -> Counterfactual:
    """``measured``: the breakdown of ``model``'s spans with measured energy (J and tokens by phase)."""
    total = 0.0
    for span in spans:
        if not span.priced:
            continue
        if span.phase not in semconv.COMPUTE_PHASES or span.tokens <= 0:
            total += span.total_g  # nothing to scale by: the span keeps its own figure
            continue
        per_token = measured.joules_per_token(span.phase)
        if per_token is None:
            return Counterfactual(None, f"no {span.phase} with measured energy on {model}")
        if span.pue is None or span.intensity is None:
            return Counterfactual(None, f"span {span.span_id} has no {semconv.CARBON_PUE} or "
                                        f"{semconv.CARBON_INTENSITY}")
        embodied_per_token = measured.embodied_by_phase.get(span.phase, 0.0) / measured.tokens_by_phase[span.phase]
        total += span.tokens * (per_token * span.pue / J_PER_KWH * span.intensity + embodied_per_token)
    return Counterfactual(total, BASIS_MEASURED_J_PER_TOKEN)


def joules_per_token(measured: Mapping[str, Breakdown]) -> dict[str, dict[str, float]]:
    """GPU model -> phase -> measured J/token, for the phases each model has figures for."""
    table: dict[str, dict[str, float]] = {}
    for model, breakdown in measured.items():
        for phase in semconv.COMPUTE_PHASES:
            value = breakdown.joules_per_token(phase)
            if value is not None:
                table.setdefault(model, {})[phase] = value
    return table
