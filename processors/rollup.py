"""The request roll-up: one request's footprint, summed over its spans, on its root span.

A disaggregated request leaves spans on several nodes (a router, a prefill worker in one region,
a decode worker in another) that reach the roll-up at different times: the join releases a
GPU span only once its energy data has arrived, while a router's root span passes straight
through. So a trace is held until its root has arrived and no span of it has arrived for
``settle_ns``, or, without a root, until it has been idle for ``idle_timeout_ns``. Spans of a
trace that was already rolled up are late: counted and passed on unchanged.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from carbonspan.processors import semconv
from carbonspan.processors.otlp import (
    add_span_attributes,
    as_float,
    attributes_to_dict,
    get_attribute,
    pick_attributes,
    regroup_spans,
)

_ROUTE_PHASES = (*semconv.COMPUTE_PHASES, semconv.PHASE_KV_TRANSFER)
#: the span attributes the roll-up reads.
_SUMMARY_INPUTS = frozenset({
    semconv.GEN_AI_REQUEST_MODEL, semconv.CARBON_PHASE, semconv.GEN_AI_USAGE_INPUT_TOKENS,
    semconv.GEN_AI_USAGE_OUTPUT_TOKENS, semconv.CARBON_QUALITY, semconv.CARBON_ENERGY_JOULES,
    semconv.CARBON_OPERATIONAL_GCO2E, semconv.CARBON_EMBODIED_GCO2E,
})


@dataclass(frozen=True)
class RollupSettings:
    settle_ns: int = 5 * 10**9
    idle_timeout_ns: int = 30 * 10**9
    max_traces: int = 200_000  # beyond this the oldest traces are rolled up early
    remember_completed: int = 200_000  # trace ids kept to recognise late spans

    def __post_init__(self) -> None:
        if self.settle_ns < 0 or self.idle_timeout_ns < self.settle_ns:
            raise ValueError("settle must be >= 0 and idle_timeout >= settle")


@dataclass(frozen=True)
class RequestSummary:
    trace_id: bytes
    model: str | None
    service_name: str | None
    route: str
    energy_j: float
    operational_g: float
    embodied_g: float
    total_g: float
    by_phase: dict[str, float]  # gCO2e
    by_region: dict[str, float]  # gCO2e
    quality: str | None
    span_count: int
    input_tokens: float
    output_tokens: float


@dataclass(frozen=True)
class RollupOutput:
    spans: list[ResourceSpans]
    requests: list[RequestSummary]


#: a held span, with what the join already knows of its attributes (None: read them from the span).
_Item = tuple[ResourceSpans, ScopeSpans, Span, dict | None]


@dataclass
class _Trace:
    items: list[_Item] = field(default_factory=list)
    has_root: bool = False
    last_seen_ns: int = 0


class RequestRollup:
    def __init__(self, settings: RollupSettings | None = None) -> None:
        self.settings = settings or RollupSettings()
        self._traces: OrderedDict[bytes, _Trace] = OrderedDict()  # least recently seen first
        self._completed: OrderedDict[bytes, None] = OrderedDict()
        self._late: list[tuple[ResourceSpans, ScopeSpans, Span]] = []
        self.late_spans = 0

    @property
    def pending_traces(self) -> int:
        return len(self._traces)

    def add(self, resource_spans: Iterable[ResourceSpans], now_ns: int,
            figures: Mapping[tuple[bytes, bytes], dict] | None = None) -> None:
        """Hold the spans until their trace is complete. ``figures`` (from ``CarbonJoin.release``
        right before, nothing in between) saves reading back the attributes the join wrote."""
        for rs in resource_spans:
            for ss in rs.scope_spans:
                for span in ss.spans:
                    trace_id = span.trace_id
                    known = figures.get((trace_id, span.span_id)) if figures else None
                    self._add(rs, ss, span, trace_id, known, now_ns)

    def _add(self, rs: ResourceSpans, ss: ScopeSpans, span: Span, trace_id: bytes, known: dict | None,
             now_ns: int) -> None:
        if trace_id in self._completed:
            self.late_spans += 1
            self._late.append((rs, ss, span))
            return
        trace = self._traces.get(trace_id)
        if trace is None:
            trace = self._traces[trace_id] = _Trace()
        else:
            self._traces.move_to_end(trace_id)
        trace.items.append((rs, ss, span, known))
        trace.has_root = trace.has_root or not span.parent_span_id
        trace.last_seen_ns = now_ns

    def release(self, now_ns: int, flush: bool = False) -> RollupOutput:
        items, self._late = self._late, []
        requests = []
        settle, idle = self.settings.settle_ns, self.settings.idle_timeout_ns
        overflow = len(self._traces) - self.settings.max_traces
        resources: dict[int, dict] = {}  # parsed resources, shared by the traces released together
        for trace_id in list(self._traces):
            trace = self._traces[trace_id]
            quiet = now_ns - trace.last_seen_ns
            forced = flush or overflow > 0
            if quiet < settle and not forced:
                break  # ordered by last seen: every later trace arrived more recently still
            if not (forced or trace.has_root or quiet >= idle):
                continue  # no root yet: give it until the idle timeout
            overflow -= 1
            del self._traces[trace_id]
            self._remember(trace_id)
            requests.append(_summarise(trace_id, trace.items, resources))
            items.extend(item[:3] for item in trace.items)
        return RollupOutput(spans=regroup_spans(items), requests=requests)

    def _remember(self, trace_id: bytes) -> None:
        self._completed[trace_id] = None
        if len(self._completed) > self.settings.remember_completed:
            self._completed.popitem(last=False)


def _root(items: list[_Item]) -> Span:
    """The trace's root: a span without parent, else the earliest whose parent never came."""
    spans = [item[2] for item in items]
    for span in spans:
        if not span.parent_span_id:
            return span
    ids = {span.span_id for span in spans}
    orphans = [span for span in spans if span.parent_span_id not in ids] or spans
    return min(orphans, key=lambda s: s.start_time_unix_nano)


def _summarise(trace_id: bytes, items: list[_Item],
               resources: dict[int, dict]) -> RequestSummary:
    energy = operational = embodied = input_tokens = output_tokens = 0.0
    by_phase: dict[str, float] = {}
    by_phase_energy: dict[str, float] = {}
    by_region: dict[str, float] = {}
    quality: str | None = None
    model = None
    route: list[tuple[int, str]] = []
    for rs, _, span, known in items:
        attrs = known if known is not None else pick_attributes(span.attributes, _SUMMARY_INPUTS)
        resource = resources.get(id(rs))
        if resource is None:
            resource = resources[id(rs)] = attributes_to_dict(rs.resource.attributes)
        model = model or attrs.get(semconv.GEN_AI_REQUEST_MODEL)
        phase = attrs.get(semconv.CARBON_PHASE)
        if phase in _ROUTE_PHASES:
            where = f"{resource.get(semconv.SERVICE_NAME, '?')}@{resource.get(semconv.CLOUD_REGION, '?')}"
            route.append((span.start_time_unix_nano, where))
        if phase == semconv.PHASE_PREFILL:
            input_tokens += as_float(attrs.get(semconv.GEN_AI_USAGE_INPUT_TOKENS)) or 0.0
        if phase == semconv.PHASE_DECODE:
            output_tokens += as_float(attrs.get(semconv.GEN_AI_USAGE_OUTPUT_TOKENS)) or 0.0
        span_quality = attrs.get(semconv.CARBON_QUALITY)
        if span_quality is None:
            continue  # not priced: a router's span, or one without GPUs
        if phase in semconv.COMPUTE_PHASES:
            quality = semconv.worse_quality(quality, span_quality)
        span_energy = as_float(attrs.get(semconv.CARBON_ENERGY_JOULES)) or 0.0
        span_operational = as_float(attrs.get(semconv.CARBON_OPERATIONAL_GCO2E)) or 0.0
        span_embodied = as_float(attrs.get(semconv.CARBON_EMBODIED_GCO2E)) or 0.0
        energy += span_energy
        operational += span_operational
        embodied += span_embodied
        if phase:
            by_phase[phase] = by_phase.get(phase, 0.0) + span_operational + span_embodied
            by_phase_energy[phase] = by_phase_energy.get(phase, 0.0) + span_energy
        region = resource.get(semconv.CLOUD_REGION)
        if region:
            by_region[region] = by_region.get(region, 0.0) + span_operational + span_embodied
    route_names: list[str] = []
    for _, where in sorted(route):
        if not route_names or route_names[-1] != where:
            route_names.append(where)
    root = _root(items)
    root_resource = next(resources[id(rs)] for rs, _, s, _ in items if s is root)
    summary = RequestSummary(
        trace_id=trace_id,
        model=model,
        service_name=root_resource.get(semconv.SERVICE_NAME),
        route=">".join(route_names),
        energy_j=energy,
        operational_g=operational,
        embodied_g=embodied,
        total_g=operational + embodied,
        by_phase=by_phase,
        by_region=by_region,
        quality=quality,
        span_count=len(items),
        input_tokens=input_tokens,
        output_tokens=output_tokens,
    )
    values: dict = {
        semconv.CARBON_REQUEST_ENERGY_JOULES: energy,
        semconv.CARBON_REQUEST_OPERATIONAL_GCO2E: operational,
        semconv.CARBON_REQUEST_EMBODIED_GCO2E: embodied,
        semconv.CARBON_REQUEST_TOTAL_GCO2E: operational + embodied,
        semconv.CARBON_REQUEST_SPAN_COUNT: len(items),
        semconv.CARBON_REQUEST_ROUTE: summary.route,
    }
    if quality is not None:
        values[semconv.CARBON_REQUEST_QUALITY] = quality
    for phase, grams in by_phase.items():
        values[semconv.request_phase_gco2e(phase)] = grams
        values[semconv.request_phase_energy(phase)] = by_phase_energy[phase]
    for region, grams in by_region.items():
        values[semconv.request_region_gco2e(region)] = grams
    if get_attribute(root.attributes, semconv.GEN_AI_REQUEST_MODEL) is None and model:
        values[semconv.GEN_AI_REQUEST_MODEL] = model
    add_span_attributes(root, values)
    return summary
