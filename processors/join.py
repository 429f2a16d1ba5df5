"""The carbon join: each span gets the energy its GPUs drew while it ran, its share of it, and
the CO2e of that energy in its region at that time, plus the GPUs' embodied carbon.

Compute spans (prefill, decode) wait until the energy and load data covering their end has
arrived (data watermark) or until their deadline passes (injected clock), then go out enriched and
flagged with the quality of what was known. Spans that computed nothing (queue, kv_transfer) are
enriched as they arrive and go on at once, inside the message they came in, with the spans of
resources without GPUs (a router's), untouched. Every span received goes on exactly once; none is
dropped.
"""

from __future__ import annotations

import functools
import heapq
import itertools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
from opentelemetry.proto.metrics.v1.metrics_pb2 import ResourceMetrics
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from carbonspan.processors import semconv
from carbonspan.processors.attribution import (
    POLICIES,
    POLICY_LOAD_METRIC,
    POLICY_TOKENS,
    GpuAttribution,
    WindowPricer,
    attribute_estimated,
    attribute_measured,
)
from carbonspan.processors.facility import FacilityTables
from carbonspan.processors.gpu_profiles import normalize_gpu_model, power_profile
from carbonspan.processors.intensity import GridLocation, IntensityProvider, IntensityReading
from carbonspan.processors.ledger import GpuLedger, Ledger
from carbonspan.processors.otlp import (
    DoubleAttributes,
    SpanGroups,
    add_span_attributes,
    as_float,
    attributes_to_dict,
    encode_span_attributes,
    read_attributes,
    take_out_spans,
)
from carbonspan.processors.rollup import SpanPart
from carbonspan.processors.series import CumulativeSeries
from carbonspan.processors.telemetry import IngestStats, Telemetry

IDLE_REPORT = "report"
IDLE_AMORTIZE = "amortize"
IDLE_POLICIES = (IDLE_REPORT, IDLE_AMORTIZE)
SECONDS_PER_YEAR = 365.25 * 24 * 3600
_RANK = {quality: rank for rank, quality in enumerate(semconv.QUALITIES)}  # higher is worse
J_PER_KWH = 3.6e6
#: the tokens a span computed, where it does not say so in carbon.tokens.
_DEFAULT_TOKENS_ATTRIBUTE = {
    semconv.PHASE_PREFILL: semconv.GEN_AI_USAGE_INPUT_TOKENS,
    semconv.PHASE_DECODE: semconv.GEN_AI_USAGE_OUTPUT_TOKENS,
}
#: the span attributes the join reads.
_ENRICH_INPUTS = frozenset({semconv.CARBON_PHASE, semconv.CARBON_TOKENS, semconv.GEN_AI_USAGE_INPUT_TOKENS,
                            semconv.GEN_AI_USAGE_OUTPUT_TOKENS, semconv.GEN_AI_REQUEST_MODEL})
#: the attributes the join writes (and the counterfactuals, by prefix): a span that arrives with
#: none of them gets them appended without a look for ones to replace.
OUTPUT_ATTRIBUTES = frozenset({
    semconv.CARBON_ENERGY_JOULES, semconv.CARBON_ENERGY_FACILITY_JOULES, semconv.CARBON_ENERGY_IDLE_JOULES,
    semconv.CARBON_PUE, semconv.CARBON_INTENSITY, semconv.CARBON_INTENSITY_SOURCE, semconv.CARBON_GRID_ZONE,
    semconv.CARBON_OPERATIONAL_GCO2E, semconv.CARBON_EMBODIED_GCO2E, semconv.CARBON_TOTAL_GCO2E,
    semconv.CARBON_EMBODIED_SOURCE, semconv.CARBON_QUALITY})
#: the counterfactuals', and the roll-up's: a span that is fresh for the join is so for the roll-up too,
#: which then appends its summary unlooked (SpanPart.unsummarised).
_OUTPUT_PREFIXES = (semconv.CARBON_COUNTERFACTUAL_PREFIX, semconv.CARBON_REQUEST_PREFIX)
#: what a roll-up sums of each span handed on, as the join read or wrote it: one entry per span, in
#: the order the messages handed on list them (None: a span the join wrote nothing on). By position,
#: not by (trace id, span id): reading the ids back and keying a dict cost more than the figures save.
SpanFigures = list[SpanPart | None]


@dataclass(frozen=True)
class JoinSettings:
    policy: str = POLICY_TOKENS
    deadline_ns: int = 10 * 10**9
    retention_ns: int = 900 * 10**9
    #: a sampling interval longer than this inside a span's window makes it ``interpolated``.
    gap_ns: int = 2 * 10**9
    #: GPU UUID -> model, for GPUs whose model no metric or resource names.
    gpu_models: Mapping[str, str] = field(default_factory=dict)
    #: (cloud.provider, cloud.region) pairs: each span also says what it would have emitted there.
    counterfactual_regions: tuple[tuple[str, str], ...] = ()
    max_observations: int = 100_000  # distinct label sets of the per-span counters between collections
    #: ``report``: idle energy is only reported per GPU; ``amortize``: it is also spread over the
    #: spans, each getting idle energy in proportion to its own (see Ledger.idle_per_busy_joule).
    idle: str = IDLE_REPORT

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}, got {self.policy!r}")
        if self.idle not in IDLE_POLICIES:
            raise ValueError(f"idle must be one of {', '.join(IDLE_POLICIES)}, got {self.idle!r}")
        if self.deadline_ns < 0 or self.retention_ns <= 0 or self.gap_ns <= 0:
            raise ValueError("deadline must be >= 0, retention and gap > 0")


@dataclass(frozen=True, slots=True)
class GpuFacts:
    model: str | None  # canonical name, or None where nothing names it
    idle_w: float | None
    #: without energy data: a GPU serving requests is taken to draw midway between idle and max (documented)
    estimated_w: float | None
    embodied_g_per_s: float | None  # embodied gCO2e amortised per second of its service life
    embodied_source: str  # the figure's source, or why there is none


@dataclass(frozen=True, eq=False)
class NodeContext:
    """What a span's resource says about where it ran, parsed once per distinct resource. Compared
    and hashed by identity: it keys the join's per-release groups and caches, where hashing its
    fields for every span cost more than the lookups."""

    gpu_ids: tuple[str, ...]
    gpu_model: str | None
    service_name: str | None
    location: GridLocation
    pue: float
    pue_source: str


@dataclass(frozen=True)
class SpanObservation:
    """Enriched spans of one label set, summed, for the per-span counters (energy by phase, gCO2e per token...)."""

    phase: str
    gpu_model: str | None
    provider: str | None
    region: str | None
    service_name: str | None
    energy_j: float
    co2e_g: float
    tokens: float


@dataclass(frozen=True)
class GridReadingRow:
    provider: str | None
    region: str | None
    zone: str | None
    gco2e_per_kwh: float
    source: str
    fallback: bool


@dataclass(eq=False, slots=True)
class _Pending:
    #: a compute span waits serialized, and its resource and scope as copies: a message would keep
    #: the whole request it came in alive (upb arenas), the spans passed on included.
    span: bytes
    node: NodeContext
    resource_spans: ResourceSpans
    scope_spans: ScopeSpans
    inputs: dict  # the span attributes the join reads, read once on arrival
    start_ns: int = 0
    end_ns: int = 0
    fresh: bool = True  # none of the attributes the join writes is on the span yet
    released: bool = False
    #: a compute span's (energy, idle share, embodied, quality, tokens, time of its grid reading) and its
    #: group's (embodied source, observation key), priced with its release
    priced: tuple | None = None


class CarbonJoin:
    def __init__(self, settings: JoinSettings, intensity: IntensityProvider, facility: FacilityTables) -> None:
        self.settings = settings
        self.intensity = intensity
        self.facility = facility
        self.telemetry = Telemetry(settings.retention_ns)
        self.ledger = Ledger()
        self._load_metric = POLICY_LOAD_METRIC[settings.policy]
        self._nodes: dict[bytes, NodeContext | None] = {}
        self._by_gpus: dict[tuple[str, ...], list[tuple[int, int, _Pending]]] = {}
        self._by_deadline: list[tuple[int, int, _Pending]] = []
        self._seq = itertools.count()
        self._pending = 0
        #: (phase, model, provider, region, service) -> [energy J, gCO2e, tokens] since the last drain.
        self._observations: dict[tuple, list[float]] = {}
        #: (provider, region, zone) -> the last reading there and its row
        self._grid: dict[tuple, tuple[IntensityReading, GridReadingRow]] = {}
        self.spans_flagged = 0
        # What depends only on the telemetry: what is known of each GPU is cleared whenever metrics
        # arrive (they may name its model); the pricers, with the stretch of each GPU's data that the spans of
        # one release cover, live for that release.
        #: (where, its PUE, the attribute) of each counterfactual region, built once
        self._counterfactuals = [
            (GridLocation(provider, region, None), facility.pue(provider, region)[0],
             semconv.counterfactual_attribute(region))
            for provider, region in settings.counterfactual_regions]
        self._facts: dict[tuple[str, str | None], GpuFacts] = {}
        #: what the join writes on every span, as numbers that vary from span to span (``_amounts``)
        #: and attributes that hold for many (``_constant_output``), each encoded once per span
        self._amounts = DoubleAttributes(
            (semconv.CARBON_ENERGY_JOULES, semconv.CARBON_ENERGY_FACILITY_JOULES, semconv.CARBON_OPERATIONAL_GCO2E,
             semconv.CARBON_EMBODIED_GCO2E, semconv.CARBON_TOTAL_GCO2E)
            + ((semconv.CARBON_ENERGY_IDLE_JOULES,) if settings.idle == IDLE_AMORTIZE else ())
            + tuple(attribute for _, _, attribute in self._counterfactuals))
        self._constants: dict[tuple, tuple[dict, bytes]] = {}
        self._unpriced: dict[tuple, tuple[dict, bytes]] = {}
        self._windows: dict[str, tuple[int, int]] = {}
        self._pricers: dict[str, WindowPricer | None] = {}

    # ------------------------------------------------------------------ input
    def add_metrics(self, resource_metrics: Iterable[ResourceMetrics]) -> IngestStats:
        self._facts.clear()
        return self.telemetry.add(resource_metrics)

    def add_spans(self, resource_spans: Iterable[ResourceSpans], now_ns: int,
                  figures: SpanFigures | None = None) -> list[ResourceSpans]:
        """Take the spans in; returns the messages with what goes on at once: spans that computed
        nothing (queue, kv_transfer: enriched in place) and spans without GPUs (untouched). The
        compute spans wait, taken out of their messages, for ``release``; ``figures`` as there.
        The messages handed in are changed: a caller that feeds them elsewhere too passes copies."""
        passed = []
        # per call, not per span: the look-ups below run for every span received
        deadline_ns, by_deadline, seq, compute_phases = (now_ns + self.settings.deadline_ns, self._by_deadline,
                                                          self._seq, semconv.COMPUTE_PHASES)
        provider, heappush, measured = self.intensity.intensity, heapq.heappush, semconv.QUALITY_MEASURED
        held = 0
        for rs in resource_spans:
            node = self._node(rs.resource)
            if node is None:
                passed.append(rs)  # nothing to price: it goes on as it came
                if figures is not None:
                    for ss in rs.scope_spans:
                        figures += [None] * len(ss.spans)
                continue
            held_rs = by_gpus = None
            location = node.location
            #: what the join writes on the node's spans that computed nothing, for the last grid reading:
            #: the same while the provider hands out the same reading (``_unpriced_output``'s entry)
            reading = unpriced = None
            taken: list[tuple[ResourceSpans, ScopeSpans, list[int]]] = []
            for ss in rs.scope_spans:
                held_ss, indexes = None, []
                for index, span in enumerate(ss.spans):
                    inputs, fresh = read_attributes(span.attributes, _ENRICH_INPUTS, OUTPUT_ATTRIBUTES,
                                                    _OUTPUT_PREFIXES)
                    start, end = span.start_time_unix_nano, span.end_time_unix_nano
                    if inputs.get(semconv.CARBON_PHASE) not in compute_phases:
                        # computed nothing (queue, kv_transfer): enriched in place
                        mid = (start + (end if end > start else start)) // 2
                        found = provider(location, mid)
                        if found is not reading:
                            reading = self._note_reading(location, found)
                            unpriced = self._unpriced_output(node, reading, mid)
                        if fresh:
                            span.MergeFromString(unpriced[1])
                        else:
                            add_span_attributes(span, unpriced[0])
                        if figures is not None:
                            figures.append(_part(inputs, fresh, measured, 0.0,
                                                 unpriced[0][semconv.CARBON_OPERATIONAL_GCO2E], 0.0))
                        continue
                    if held_ss is None:
                        # copies: a held span must not keep the message it came in alive (see _Pending)
                        held_rs = held_rs or ResourceSpans(resource=rs.resource, schema_url=rs.schema_url)
                        held_ss = ScopeSpans(scope=ss.scope, schema_url=ss.schema_url)
                        by_gpus = by_gpus or self._by_gpus.setdefault(node.gpu_ids, [])
                    pending = _Pending(span.SerializeToString(), node, held_rs, held_ss, inputs, start, end, fresh)
                    number = next(seq)
                    heappush(by_gpus, (end, number, pending))
                    heappush(by_deadline, (deadline_ns, number, pending))
                    indexes.append(index)
                if indexes:
                    held += len(indexes)
                    taken.append((rs, ss, indexes))
            take_out_spans(taken)
            if rs.scope_spans:
                passed.append(rs)
        self._pending += held
        return passed

    @property
    def pending_spans(self) -> int:
        return self._pending

    # ------------------------------------------------------------------ output
    def release(self, now_ns: int, flush: bool = False, figures: SpanFigures | None = None) -> list[ResourceSpans]:
        """Enrich and return every span whose data has arrived, whose deadline passed, or all.

        With ``figures``, each enriched span's attributes that the join read or wrote are put there
        too (in the order of the messages returned), so that the roll-up right after it need not
        read them back from the span."""
        out = []
        for gpu_ids, heap in self._by_gpus.items():
            marks = [self._watermark(g) for g in gpu_ids]
            watermark = None if None in marks else min(marks)
            while heap and (flush or (watermark is not None and heap[0][0] <= watermark)):
                out.append(heapq.heappop(heap)[2])
        while self._by_deadline and (flush or self._by_deadline[0][0] <= now_ns):
            out.append(heapq.heappop(self._by_deadline)[2])
        self.ledger.advance(self.telemetry, self._load_metric, self._idle_watts)  # idle amortisation reads it
        self._price_release(out)
        groups = self._enrich_priced(out, figures)
        self._windows.clear()
        self._pricers.clear()
        self._compact()
        return groups.build(figures)

    def gpu_ledger(self) -> list[GpuLedger]:
        return self.ledger.rows(self.telemetry)

    def grid_readings(self) -> list[GridReadingRow]:
        return [row for _, row in self._grid.values()]

    def span_observations(self) -> list[SpanObservation]:
        """The priced spans since the last call, summed per label set: the counters they feed take
        one addition per label set and collection, not one per span."""
        drained = [SpanObservation(*key, *sums) for key, sums in self._observations.items()]
        self._observations.clear()
        return drained

    # ------------------------------------------------------------------ internals
    def _price_release(self, releasing: list[_Pending]) -> None:
        """Price every compute span about to be released: per GPU, the stretch of its data that
        they cover becomes one ``WindowPricer``, which prices each node's spans of one phase in one
        go; the few it declines are walked one by one (``_attribute``)."""
        groups: dict[tuple[NodeContext, str], list[_Pending]] = {}
        for pending in releasing:
            if pending.released or pending.priced is not None:
                continue
            pending.priced = ()  # taken: a span popped from both heaps is priced once
            groups.setdefault((pending.node, pending.inputs[semconv.CARBON_PHASE]), []).append(pending)
        spans = {}  # per group, its spans' [a, b]
        for (node, phase), group in groups.items():  # every GPU's window before its first pricer is built
            a = np.array([p.start_ns for p in group], dtype=np.int64)
            b = np.maximum(np.array([p.end_ns for p in group], dtype=np.int64), a)
            spans[(node, phase)] = (a, b)
            lo, hi = int(a.min()), int(b.max())
            for gpu_id in node.gpu_ids:
                known = self._windows.get(gpu_id)
                self._windows[gpu_id] = (lo, hi) if known is None else (min(known[0], lo), max(known[1], hi))
        for (node, phase), group in groups.items():
            self._price_group(node, phase, group, *spans[(node, phase)])

    def _price_group(self, node: NodeContext, phase: str, group: list[_Pending], a: np.ndarray, b: np.ndarray
                     ) -> None:
        """Price one node's spans of one phase; what holds for all of them (the embodied source, the
        observation key) is made once here, not per span where they are enriched."""
        tokens = _tokens([p.inputs for p in group], phase)
        tokens_policy = self.settings.policy == POLICY_TOKENS
        measure = np.array(tokens) if tokens_policy else (b - a) * 1e-9
        rate_phase = phase if tokens_policy else None
        energy, idle, embodied = np.zeros(len(group)), np.zeros(len(group)), np.zeros(len(group))
        rank = np.zeros(len(group), dtype=np.int64)  # of the worst quality so far
        sources = set()
        for gpu_id in node.gpu_ids:
            gpu_energy, gpu_seconds, gpu_rank = self._price_on_gpu(gpu_id, node, a, b, measure, rate_phase)
            counted = gpu_rank <= _RANK[semconv.QUALITY_EXTRAPOLATED]  # measured energy, booked in the ledger
            if self.settings.idle == IDLE_AMORTIZE:
                idle += np.where(counted, gpu_energy, 0.0) * self.ledger.idle_per_busy_joule(gpu_id)
            self.ledger.attribute(gpu_id, float(np.sum(gpu_energy[counted])))
            energy += gpu_energy
            rank = np.maximum(rank, gpu_rank)
            facts = self._gpu_facts(gpu_id, node)
            if facts.embodied_g_per_s is not None:
                embodied += facts.embodied_g_per_s * gpu_seconds
            sources.add(facts.embodied_source)
        source = "; ".join(sorted(sources)) or None
        location = node.location
        observation = (phase, self._gpu_facts(node.gpu_ids[0], node).model, location.provider, location.region,
                       node.service_name)
        qualities = semconv.QUALITIES
        # the grid reading's time: the span's middle, a + (b - a) // 2 == (a + b) // 2 without overflow
        for pending, e, i, m, r, t, mid in zip(group, (energy + idle).tolist(), idle.tolist(), embodied.tolist(),
                                               rank.tolist(), tokens, (a + (b - a) // 2).tolist(), strict=True):
            pending.priced = (e, i, m, qualities[r], t, mid, source, observation)

    def _price_on_gpu(self, gpu_id: str, node: NodeContext, a: np.ndarray, b: np.ndarray, measure: np.ndarray,
                      rate_phase: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(energy, GPU-seconds, quality rank) of each span on one GPU."""
        series = self._measured_series(gpu_id)
        if series is not None:
            priced = self._pricer(gpu_id, series, node).price(a, b, measure, rate_phase)
            energy, seconds = priced.energy_j, priced.gpu_seconds
            rank = np.where(priced.interpolated, _RANK[semconv.QUALITY_INTERPOLATED], _RANK[semconv.QUALITY_MEASURED])
            walk = np.flatnonzero(~priced.ok)
        else:
            energy, seconds, rank = np.zeros(len(a)), np.zeros(len(a)), np.zeros(len(a), dtype=np.int64)
            walk = range(len(a))
        for k in walk:
            result = self._attribute(gpu_id, node, int(a[k]), int(b[k]), float(measure[k]), rate_phase)
            energy[k], seconds[k], rank[k] = result.energy_j, result.gpu_seconds, _RANK[result.quality]
        return energy, seconds, rank

    def _compact(self) -> None:
        """Drop heap entries of spans already released through the other heap."""
        if len(self._by_deadline) > 2 * self._pending + 1024:
            self._by_deadline = [e for e in self._by_deadline if not e[2].released]
            heapq.heapify(self._by_deadline)
        for key, heap in list(self._by_gpus.items()):
            if not heap:
                del self._by_gpus[key]
            elif len(heap) > 2 * self._pending + 1024:
                self._by_gpus[key] = [e for e in heap if not e[2].released]
                heapq.heapify(self._by_gpus[key])

    def _watermark(self, gpu_id: str) -> int | None:
        info = self.telemetry.gpus.get(gpu_id)
        series = info.series if info else None
        if series is None:
            return None
        load_newest = self.telemetry.load_newest_ns(gpu_id, self._load_metric)
        return series.newest_ns if load_newest is None else min(series.newest_ns, load_newest)

    def _node(self, resource: Resource) -> NodeContext | None:
        key = resource.SerializeToString(deterministic=True)
        if key in self._nodes:
            return self._nodes[key]
        attrs = attributes_to_dict(resource.attributes)
        gpu_ids = attrs.get(semconv.CARBON_GPU_IDS)
        node = None
        if gpu_ids:
            provider, region = attrs.get(semconv.CLOUD_PROVIDER), attrs.get(semconv.CLOUD_REGION)
            pue, pue_source = self.facility.pue(provider, region)
            node = NodeContext(
                gpu_ids=tuple(str(g) for g in (gpu_ids if isinstance(gpu_ids, list) else [gpu_ids])),
                gpu_model=attrs.get(semconv.CARBON_GPU_MODEL),
                service_name=attrs.get(semconv.SERVICE_NAME),
                location=GridLocation(provider=provider, region=region, zone=attrs.get(semconv.CARBON_GRID_ZONE)),
                pue=pue,
                pue_source=pue_source,
            )
        if len(self._nodes) > 10_000:  # bounded: resources are few, but never trust input
            self._nodes.clear()
        self._nodes[key] = node
        return node

    def _gpu_facts(self, gpu_id: str, node: NodeContext | None = None) -> GpuFacts:
        """The GPU's model and the figures that follow from it; the node's resource may name the model."""
        key = (gpu_id, node.gpu_model if node is not None else None)
        facts = self._facts.get(key)
        if facts is None:
            info = self.telemetry.gpus.get(gpu_id)
            name = self.settings.gpu_models.get(gpu_id) or (info.model if info else None) or (node and node.gpu_model)
            model = normalize_gpu_model(name) if name else None
            profile = power_profile(model or "")
            figure = self.facility.embodied(model)
            facts = self._facts[key] = GpuFacts(
                model=model,
                idle_w=profile.idle_w if profile else None,
                estimated_w=(profile.idle_w + profile.max_w) / 2 if profile else None,
                embodied_g_per_s=(figure.kgco2e * 1000.0 / (figure.lifetime_years * SECONDS_PER_YEAR)
                                  if figure is not None else None),
                embodied_source=(figure.source if figure is not None
                                 else f"none: no embodied figure for {model or 'an unknown GPU model'}"),
            )
        return facts

    def _idle_watts(self, gpu_id: str, node: NodeContext | None = None) -> float | None:
        return self._gpu_facts(gpu_id, node).idle_w

    def _pricer(self, gpu_id: str, series: CumulativeSeries, node: NodeContext) -> WindowPricer:
        pricer = self._pricers.get(gpu_id)
        if pricer is None:
            pricer = self._pricers[gpu_id] = WindowPricer(
                series, *self._load_access(gpu_id), *self._windows[gpu_id], self.settings.gap_ns,
                self._idle_watts(gpu_id, node), functools.partial(self.telemetry.phase_token_rates, gpu_id))
        return pricer

    def _load_access(self, gpu_id: str) -> tuple[Callable[[list[int]], list[float] | None],
                                                  Callable[[int, int], list[int]]]:
        """The GPU's load curve and load points, for the policy's load metric."""
        return (functools.partial(self.telemetry.load_at, gpu_id, self._load_metric),
                functools.partial(self.telemetry.load_breakpoints, gpu_id, self._load_metric))

    def _measured_series(self, gpu_id: str) -> CumulativeSeries | None:
        """The GPU's energy series where it has an interval to price from."""
        info = self.telemetry.gpus.get(gpu_id)
        series = info.series if info else None
        return series if series is not None and len(series) >= 2 else None

    def _attribute(self, gpu_id: str, node: NodeContext, a: int, b: int, measure: float,
                   rate_phase: str | None) -> GpuAttribution:
        """One span on one GPU, walked. ``rate_phase``: the phase whose token rate spreads the span's
        tokens (None for the time policy, whose measure accrues evenly)."""
        series = self._measured_series(gpu_id)
        if series is not None:
            rate = functools.partial(self.telemetry.phase_token_rates, gpu_id, rate_phase) if rate_phase else None
            return attribute_measured(series, *self._load_access(gpu_id), a, b, measure, self.settings.gap_ns,
                                      self._idle_watts(gpu_id, node), rate)
        estimated_w = self._gpu_facts(gpu_id, node).estimated_w
        if estimated_w is not None:
            return attribute_estimated(estimated_w, self._load_access(gpu_id)[0], a, b, measure)
        return GpuAttribution(0.0, 0.0, 0.0, semconv.QUALITY_MISSING)

    def _enrich_priced(self, out: list[_Pending], figures: SpanFigures | None) -> SpanGroups:
        """Put each priced compute span not yet released in its group with what the join writes,
        appended to its bytes where it carries none of those attributes yet (the group parses a
        scope's spans at once). In release order: the grid readings and the observations are met
        in the order the spans go out."""
        groups = SpanGroups()
        provider, amounts_of, constant_output = self.intensity.intensity, self._amounts_of, self._constant_output
        encode, keys, observations = self._amounts.encode, self._amounts.keys, self._observations
        released = flagged = 0
        # what the last span had (the next one mostly shares them): its node and grid reading, its
        # constant output with its quality and embodied source (_constant_output's entry for them),
        # its scope's lists in ``groups``
        node = reading = quality = source = constants = scope = None
        for pending in out:
            if pending.released:
                continue
            pending.released = True
            released += 1
            energy, idle, embodied, span_quality, tokens, mid, span_source, observation = pending.priced
            found = provider(pending.node.location, mid)
            if found is not reading or pending.node is not node:
                node = pending.node
                reading = self._note_reading(node.location, found)
                constants = None
            amounts = amounts_of(node, reading, mid, energy, idle, embodied)
            if constants is None or span_quality is not quality or span_source is not source:
                quality, source = span_quality, span_source
                constants, encoded = constant_output(node, reading, quality, source)
            if pending.scope_spans is not scope:
                scope = pending.scope_spans
                spans, tags = groups.scope(pending.resource_spans, scope)
            if pending.fresh:
                enriched = pending.span + encoded + encode(amounts)
            else:
                span = Span.FromString(pending.span)
                add_span_attributes(span, {**constants, **dict(zip(keys, amounts, strict=True))})
                enriched = span.SerializeToString()
            pending.span = b""  # the heaps may still reference the entry until they are compacted
            operational = amounts[2]
            if quality != semconv.QUALITY_MEASURED:
                flagged += 1
            spans.append(enriched)
            tags.append(None if figures is None else _part(pending.inputs, pending.fresh, quality, energy, operational,
                                                           embodied))
            sums = observations.get(observation)
            if sums is None:
                if len(observations) >= self.settings.max_observations:
                    continue  # bounded: label sets are few, but never trust input
                sums = observations[observation] = [0.0, 0.0, 0.0]
            sums[0] += energy
            sums[1] += operational + embodied
            sums[2] += tokens
        self._pending -= released
        self.spans_flagged += flagged
        return groups

    def _amounts_of(self, node: NodeContext, reading: IntensityReading, time_ns: int, energy: float, idle: float,
                    embodied: float) -> list[float]:
        """The numbers the join writes on a span, in the order of ``self._amounts``."""
        facility_j = energy * node.pue
        operational = facility_j / J_PER_KWH * reading.gco2e_per_kwh
        amounts = [energy, facility_j, operational, embodied, operational + embodied]
        if self.settings.idle == IDLE_AMORTIZE:
            amounts.append(idle)
        for location, pue, _ in self._counterfactuals:
            amounts.append(energy * pue / J_PER_KWH * self._intensity(location, time_ns).gco2e_per_kwh + embodied)
        return amounts

    def _constant_output(self, node: NodeContext, reading: IntensityReading, quality: str,
                         embodied_source: str | None) -> tuple[dict, bytes]:
        """The attributes the join writes that many spans share (where and how the figures were
        made), and their encoding: built once per combination."""
        key = (node, reading.gco2e_per_kwh, reading.source, reading.zone, quality, embodied_source)
        cached = self._constants.get(key)
        if cached is None:
            if len(self._constants) > 1024:  # bounded: nodes, readings, qualities are few, but never trust input
                self._constants.clear()
            values = {semconv.CARBON_PUE: node.pue, semconv.CARBON_INTENSITY: reading.gco2e_per_kwh,
                      semconv.CARBON_INTENSITY_SOURCE: reading.source, semconv.CARBON_QUALITY: quality}
            if reading.zone:
                values[semconv.CARBON_GRID_ZONE] = reading.zone
            if embodied_source:
                values[semconv.CARBON_EMBODIED_SOURCE] = embodied_source
            cached = self._constants[key] = (values, encode_span_attributes(values))
        return cached

    def _unpriced_output(self, node: NodeContext, reading: IntensityReading, time_ns: int) -> tuple[dict, bytes]:
        """What the join writes on a span that computed nothing (queue, kv_transfer), and its
        encoding: the same for every such span of the node while the grid reading holds."""
        key = (node, reading.gco2e_per_kwh, reading.source, reading.zone)  # what the output reads of it
        cached = self._unpriced.get(key)
        if cached is None:
            if len(self._unpriced) > 1024:  # bounded: nodes and grid readings are few, but never trust input
                self._unpriced.clear()
            constants, encoded = self._constant_output(node, reading, semconv.QUALITY_MEASURED, None)
            amounts = self._amounts_of(node, reading, time_ns, 0.0, 0.0, 0.0)
            values = {**constants, **dict(zip(self._amounts.keys, amounts, strict=True))}
            cached = self._unpriced[key] = (values, encoded + self._amounts.encode(amounts))
        return cached

    def _intensity(self, location: GridLocation, time_ns: int) -> IntensityReading:
        return self._note_reading(location, self.intensity.intensity(location, time_ns))

    def _note_reading(self, location: GridLocation, reading: IntensityReading) -> IntensityReading:
        """Keep the location's last reading and its row for ``grid_readings``. A loop over spans of
        one location calls it only when the provider hands out another reading object: for the same
        one it would change nothing."""
        key = (location.provider, location.region, location.zone)
        last = self._grid.get(key)
        if last is not None and last[0] is reading:
            return reading  # providers hand out one reading object while it holds
        row = last[1] if last is not None else None
        if row is None or (row.zone, row.gco2e_per_kwh, row.source, row.fallback) != (
                reading.zone, reading.gco2e_per_kwh, reading.source, reading.fallback):
            row = GridReadingRow(location.provider, location.region, reading.zone, reading.gco2e_per_kwh,
                                 reading.source, reading.fallback)
        self._grid[key] = (reading, row)
        return reading


def _tokens(inputs: list[dict], phase: str) -> list[float]:
    """The tokens each span computed: its carbon.tokens, else the phase's usage attribute; 0 where
    neither is a number. The fallback is looked up once for the spans of one phase."""
    fallback = _DEFAULT_TOKENS_ATTRIBUTE.get(phase, semconv.GEN_AI_USAGE_OUTPUT_TOKENS)
    out = []
    for attrs in inputs:
        tokens = as_float(attrs.get(semconv.CARBON_TOKENS))
        if tokens is None:
            tokens = as_float(attrs.get(fallback))
        out.append(max(tokens or 0.0, 0.0))
    return out


def _part(inputs: dict, fresh: bool, quality: str, energy: float, operational: float, embodied: float) -> SpanPart:
    """What a roll-up sums of an enriched span, and no more: the roll-up keeps it until the span's
    trace is complete. Made by ``tuple.__new__`` (as a named tuple's ``_make`` does): calling
    ``SpanPart(...)`` goes through the type's call and its Python ``__new__``, for every span; the
    fields are in their order, all of them."""
    get = inputs.get
    # the join's outputs were not there (fresh), so neither are the roll-up's
    return tuple.__new__(SpanPart, (get(semconv.CARBON_PHASE), get(semconv.GEN_AI_REQUEST_MODEL),
                                    get(semconv.GEN_AI_USAGE_INPUT_TOKENS), get(semconv.GEN_AI_USAGE_OUTPUT_TOKENS),
                                    quality, energy, operational, embodied, fresh))
