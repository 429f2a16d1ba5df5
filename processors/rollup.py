"""The request roll-up: one request's footprint, summed over its spans, on its root span.

A disaggregated request leaves spans on several nodes (a router, a prefill worker in one region,
a decode worker in another) that reach the roll-up at different times: the join releases a
GPU span only once its energy data has arrived, while a router's root span passes straight
through. So a trace stays open until its root has arrived and no span of it has arrived for
``settle_ns``, or, without a root, until it has been idle for ``idle_timeout_ns``. Spans of a
trace that was already rolled up are late: counted and passed on unchanged.

A span's figures are noted when it arrives (and summed, in arrival order, when its trace is rolled
up); only the spans that may still carry the summary are held: the root once it is there, before
that the earliest span of each missing parent (the candidates of the orphan rule) and the earliest
span of all (the carrier of a trace whose every span has its parent: a cycle), each kept
serialized, the summary appended to the carrier's bytes. Every other span goes on at the next
``release``, unchanged, inside the message it came in (the held spans taken out of it): not copied.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from carbonspan.processors import semconv
from carbonspan.processors.otlp import (
    DoubleAttributes,
    SpanGroups,
    add_span_attributes,
    as_float,
    encode_span_attributes,
    pick_attributes,
    read_attributes,
    take_out_spans,
)

_ROUTE_PHASES = (*semconv.COMPUTE_PHASES, semconv.PHASE_KV_TRANSFER)
#: the span attributes the roll-up reads.
_SUMMARY_INPUTS = frozenset({
    semconv.GEN_AI_REQUEST_MODEL, semconv.CARBON_PHASE, semconv.GEN_AI_USAGE_INPUT_TOKENS,
    semconv.GEN_AI_USAGE_OUTPUT_TOKENS, semconv.CARBON_QUALITY, semconv.CARBON_ENERGY_JOULES,
    semconv.CARBON_OPERATIONAL_GCO2E, semconv.CARBON_EMBODIED_GCO2E,
})
#: the resource attributes the roll-up reads.
_RESOURCE_INPUTS = frozenset({semconv.SERVICE_NAME, semconv.CLOUD_REGION})

_PHASE, _MODEL, _QUALITY = semconv.CARBON_PHASE, semconv.GEN_AI_REQUEST_MODEL, semconv.CARBON_QUALITY
_INPUT, _OUTPUT = semconv.GEN_AI_USAGE_INPUT_TOKENS, semconv.GEN_AI_USAGE_OUTPUT_TOKENS
_ENERGY, _OPERATIONAL, _EMBODIED = (semconv.CARBON_ENERGY_JOULES, semconv.CARBON_OPERATIONAL_GCO2E,
                                    semconv.CARBON_EMBODIED_GCO2E)
_PREFILL, _DECODE, _COMPUTE = semconv.PHASE_PREFILL, semconv.PHASE_DECODE, semconv.COMPUTE_PHASES
_NO_KEYS: frozenset[str] = frozenset()  # the summary's keys are known by their prefix alone
_END = object()  # past the last of the join's figures


class SpanPart(NamedTuple):
    """What one span adds to its trace's summary: read from its attributes, or handed over by the
    join that has just written them (its ``figures``), which saves reading them back."""

    phase: str | None
    model: str | None
    input_tokens: Any
    output_tokens: Any
    quality: str | None  # None: not priced (a router's span, or one without GPUs)
    #: floats (0.0 where a span read back has none or no number), as the join hands them over
    energy_j: float
    operational_g: float
    embodied_g: float
    #: no ``carbon.request.*`` attribute is on the span: the summary is appended without a look
    unsummarised: bool


def _read_part(span: Span) -> SpanPart:
    attrs, unsummarised = read_attributes(span.attributes, _SUMMARY_INPUTS, _NO_KEYS, semconv.CARBON_REQUEST_PREFIX)
    get = attrs.get
    # by tuple.__new__, as the join makes them: the named tuple's call goes through its Python __new__
    return tuple.__new__(SpanPart, (get(_PHASE), get(_MODEL), get(_INPUT), get(_OUTPUT), get(_QUALITY),
                                    _number(get(_ENERGY)), _number(get(_OPERATIONAL)), _number(get(_EMBODIED)),
                                    unsummarised))


@dataclass(frozen=True)
class RollupSettings:
    settle_ns: int = 5 * 10**9
    idle_timeout_ns: int = 30 * 10**9
    max_traces: int = 200_000  # beyond this the oldest traces are rolled up early
    remember_completed: int = 200_000  # trace ids kept to recognise late spans

    def __post_init__(self) -> None:
        if self.settle_ns < 0 or self.idle_timeout_ns < self.settle_ns:
            raise ValueError("settle must be >= 0 and idle_timeout >= settle")


@dataclass(slots=True)
class RequestSummary:
    """One per request: not frozen, since a frozen dataclass's ``__init__`` sets its 14 fields one
    ``object.__setattr__`` at a time (~3 µs a request, in py-spy's profile of the collector)."""

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


class _Origin:
    """What the roll-up reads of a span's resource, once per message."""

    __slots__ = ("service_name", "region", "where")

    def __init__(self, rs: ResourceSpans) -> None:
        resource = pick_attributes(rs.resource.attributes, _RESOURCE_INPUTS)
        self.service_name = resource.get(semconv.SERVICE_NAME)
        self.region = resource.get(semconv.CLOUD_REGION)
        self.where = f"{resource.get(semconv.SERVICE_NAME, '?')}@{resource.get(semconv.CLOUD_REGION, '?')}"


class _Held:
    """A span that may still carry its trace's summary. ``batch``: the ``add`` call it came in
    with; ``index``: its place in its ScopeSpans then. At the end of that call it is taken out,
    serialized, with copies of its resource and scope: the message it came in goes on and is freed."""

    __slots__ = ("start", "seq", "parent", "rs", "ss", "span", "origin", "batch", "index", "held")

    def __init__(self, start: int, seq: int, parent: bytes, rs: ResourceSpans, ss: ScopeSpans, span: Span | bytes,
                 origin: _Origin, batch: int, index: int) -> None:
        self.start, self.seq, self.parent, self.rs, self.ss, self.span = start, seq, parent, rs, ss, span
        self.origin, self.batch, self.index, self.held = origin, batch, index, True


def _number(value) -> float:
    """``as_float(value) or 0.0``: a figure read back from a span, as the summary sums it."""
    if value is None:  # the root's energy and grams: it has none
        return 0.0
    return as_float(value) or 0.0


#: the figures' types that the summary adds as they are: a float plus an int is the float plus
#: ``float(int)`` (both rounded once), and ``as_float``'s ``or 0.0`` only turns -0.0 into 0.0,
#: which changes no sum that starts at 0.0.
_PLAIN_NUMBERS = frozenset({int, float})


class _Trace:
    """An open trace: what each of its spans adds to the summary (in arrival order, the order the
    summary sums in) and the spans that may still carry the summary."""

    __slots__ = ("parts", "root", "ids", "orphans", "earliest", "last_seen_ns", "touched")

    def __init__(self) -> None:
        self.parts: list[tuple[SpanPart, _Origin, int]] = []  # (figures, resource, start) of each span
        self.root: _Held | None = None
        self.ids: set[bytes] = set()  # span ids seen, until the root comes
        self.orphans: dict[bytes, _Held] = {}  # missing parent id -> the earliest of its children
        self.earliest: _Held | None = None
        self.last_seen_ns = 0
        self.touched = 0  # order of the last span's arrival over all traces

    def needs(self, item: _Held) -> bool:
        return item is self.root or item is self.earliest or self.orphans.get(item.parent) is item

    def held(self) -> list[_Held]:
        if self.root is not None:
            return [self.root]
        held = list(self.orphans.values())
        if self.earliest is not None and self.orphans.get(self.earliest.parent) is not self.earliest:
            held.append(self.earliest)
        return held

    def carrier(self) -> _Held:
        """The root: a span without parent, else the earliest whose parent never came (else the earliest)."""
        if self.root is not None:
            return self.root
        if self.orphans:
            return min(self.orphans.values(), key=lambda h: (h.start, h.seq))
        assert self.earliest is not None
        return self.earliest


class RequestRollup:
    def __init__(self, settings: RollupSettings | None = None) -> None:
        self.settings = settings or RollupSettings()
        # open traces by whether their root has come (each waits for a different quiet time), least recently seen first
        self._rooted: OrderedDict[bytes, _Trace] = OrderedDict()
        self._rootless: OrderedDict[bytes, _Trace] = OrderedDict()
        self._touch = itertools.count(1)  # order of arrival over all traces (_Trace.touched)
        self._completed: OrderedDict[bytes, None] = OrderedDict()
        self._whole: list[ResourceSpans] = []  # messages that go on as they came (held spans taken out)
        self._loose: list[tuple[ResourceSpans, ScopeSpans, bytes]] = []  # held spans that need not be any more
        self._batch = 0
        self.late_spans = 0

    @property
    def pending_traces(self) -> int:
        return len(self._rooted) + len(self._rootless)

    def add(self, resource_spans: Iterable[ResourceSpans], now_ns: int,
            figures: Sequence[SpanPart | None] | None = None) -> None:
        """Sum the spans into their traces; hold those that may carry a summary, pass the others on at
        the next ``release``. ``figures`` (from ``CarbonJoin.add_spans`` or ``release`` right before,
        nothing in between: one entry per span, in the order of the messages) saves reading back the
        attributes the join wrote."""
        self._batch += 1
        batch = list(resource_spans)
        new: list[_Held] = []
        completed, rooted, rootless, touch = self._completed, self._rooted, self._rootless, self._touch
        parts = iter(figures or ())
        for rs in batch:
            origin = _Origin(rs)
            for ss in rs.scope_spans:
                for index, span in enumerate(ss.spans):
                    known = next(parts, None)  # by position: a span past the figures' end is read
                    trace_id = span.trace_id
                    # summed into its trace here, in the loop: most spans need nothing else (a call each costs)
                    trace = rooted.get(trace_id)
                    if trace is not None:
                        rooted.move_to_end(trace_id)
                    elif trace_id in completed:  # an open trace's id never is
                        self.late_spans += 1
                        continue
                    else:
                        trace = rootless.get(trace_id)
                        if trace is None:
                            trace = rootless[trace_id] = _Trace()
                        else:
                            rootless.move_to_end(trace_id)
                    trace.last_seen_ns = now_ns
                    trace.touched = next(touch)
                    start = span.start_time_unix_nano
                    trace.parts.append((known or _read_part(span), origin, start))
                    if trace.root is None:  # once the root is there, no other span is held
                        held = self._hold(trace, trace_id, rs, ss, span, index, start, origin)
                        if held is not None:
                            new.append(held)
        if next(parts, _END) is not _END:
            raise ValueError("more figures than spans: they must come from the join right before")
        self._take_out([h for h in new if h.held])
        self._whole += [rs for rs in batch if any(ss.spans for ss in rs.scope_spans)]

    def _hold(self, trace: _Trace, trace_id: bytes, rs: ResourceSpans, ss: ScopeSpans, span: Span, index: int,
              start: int, origin: _Origin) -> _Held | None:
        """The span (just summed into its trace, which has no root yet) as held, or None where it need not be."""
        seq = len(trace.parts) - 1
        parent = span.parent_span_id
        if not parent:
            item = _Held(start, seq, parent, rs, ss, span, origin, self._batch, index)
            for other in trace.held():
                self._free(other)
            trace.root, trace.ids, trace.orphans, trace.earliest = item, set(), {}, None
            self._rooted[trace_id] = self._rootless.pop(trace_id)
            return item
        span_id = span.span_id
        ids, orphans = trace.ids, trace.orphans
        ids.add(span_id)
        dropped = orphans.pop(span_id, None)  # their parent came: no longer orphans
        is_orphan = parent not in ids
        orphan = orphans.get(parent) if is_orphan else None
        earliest = trace.earliest
        # ties: the one that came first stays
        first_orphan = is_orphan and (orphan is None or start < orphan.start)
        first = earliest is None or start < earliest.start
        item = None
        if first_orphan or first:
            item = _Held(start, seq, parent, rs, ss, span, origin, self._batch, index)
            if first_orphan:
                orphans[parent] = item
            if first:
                trace.earliest = item
        if item is not None or dropped is not None:  # else none of them changed role
            for other in (dropped, orphan if first_orphan else None, earliest if first else None):
                if other and not trace.needs(other):
                    self._free(other)
        return item

    def _free(self, item: _Held) -> None:
        """A held span that can no longer carry the summary goes on: still in its message when it came
        in this ``add`` call (not taken out yet), else on its own."""
        if not item.held:
            return  # dropped from two roles at once
        item.held = False
        if item.batch != self._batch:
            self._loose.append((item.rs, item.ss, item.span))

    @staticmethod
    def _take_out(held: list[_Held]) -> None:
        """Take the spans held from this ``add`` call out of their messages, serialized, so that
        the rest of each message goes on as it is."""
        by_scope: dict[int, tuple[ResourceSpans, ScopeSpans, list[int]]] = {}
        copies: dict[int, tuple[ResourceSpans, ScopeSpans]] = {}
        for item in held:
            entry = by_scope.get(id(item.ss))
            if entry is None:
                entry = by_scope[id(item.ss)] = (item.rs, item.ss, [])
                copies[id(item.ss)] = (ResourceSpans(resource=item.rs.resource, schema_url=item.rs.schema_url),
                                       ScopeSpans(scope=item.ss.scope, schema_url=item.ss.schema_url))
            entry[2].append(item.index)
            item.span = item.span.SerializeToString()
            item.rs, item.ss = copies[id(item.ss)]
        take_out_spans(by_scope.values())

    def release(self, now_ns: int, flush: bool = False) -> RollupOutput:
        spans, self._whole = self._whole, []
        items, self._loose = self._loose, []
        due: list[tuple[int, bytes, _Trace]] = []
        overflow = len(self._rooted) + len(self._rootless) - self.settings.max_traces
        while overflow > 0 or flush:  # beyond the bound (or at a flush) the least recently seen go first
            oldest = [d for d in (self._rooted, self._rootless) if d]
            if not oldest:
                break
            traces = min(oldest, key=lambda d: next(iter(d.values())).touched)
            trace_id, trace = traces.popitem(last=False)
            due.append((trace.touched, trace_id, trace))
            overflow -= 1
        waits = ((self._rooted, self.settings.settle_ns), (self._rootless, self.settings.idle_timeout_ns))
        for traces, quiet_ns in waits:
            while traces:
                trace_id, trace = next(iter(traces.items()))
                if now_ns - trace.last_seen_ns < quiet_ns:
                    break  # ordered by last seen: every later trace arrived more recently still
                del traces[trace_id]
                due.append((trace.touched, trace_id, trace))
        due.sort()  # by touched, which no two traces share: the tuples never compare further
        requests = []
        for _, trace_id, trace in due:
            self._remember(trace_id)
            requests.append(_summarise(trace_id, trace, trace.carrier()))
            items.extend((h.rs, h.ss, h.span) for h in trace.held())
        groups = SpanGroups()
        groups.extend(items)
        return RollupOutput(spans=spans + groups.build(), requests=requests)

    def _remember(self, trace_id: bytes) -> None:
        self._completed[trace_id] = None
        if len(self._completed) > self.settings.remember_completed:
            self._completed.popitem(last=False)


#: the summary's numbers for the phases and regions a trace has, by (phases, regions)
_SUMMARY_DOUBLES: dict[tuple[tuple[str, ...], tuple[str, ...]], DoubleAttributes] = {}


def _summary_doubles(phases: tuple[str, ...], regions: tuple[str, ...]) -> DoubleAttributes:
    """The numbers of a summary, in the order ``_summarise`` lists them: totals, then per phase its
    gCO2e and energy, then per region its gCO2e."""
    encoder = _SUMMARY_DOUBLES.get((phases, regions))
    if encoder is None:
        if len(_SUMMARY_DOUBLES) > 1024:  # bounded: phases and regions are few, but never trust input
            _SUMMARY_DOUBLES.clear()
        keys = [semconv.CARBON_REQUEST_ENERGY_JOULES, semconv.CARBON_REQUEST_OPERATIONAL_GCO2E,
                semconv.CARBON_REQUEST_EMBODIED_GCO2E, semconv.CARBON_REQUEST_TOTAL_GCO2E]
        for phase in phases:
            keys += (semconv.request_phase_gco2e(phase), semconv.request_phase_energy(phase))
        keys += [semconv.request_region_gco2e(region) for region in regions]
        encoder = _SUMMARY_DOUBLES[(phases, regions)] = DoubleAttributes(keys)
    return encoder


#: the summary's other attributes by (span count, route, quality), and their encoding
_SUMMARY_OTHERS: dict[tuple[int, str, str | None], tuple[dict, bytes]] = {}


def _summary_others(count: int, route: str, quality: str | None) -> tuple[dict, bytes]:
    """The summary's attributes that are not numbers, and their encoding: the same for every
    request of a route and shape, so encoded once for them all."""
    key = (count, route, quality)
    cached = _SUMMARY_OTHERS.get(key)
    if cached is None:
        if len(_SUMMARY_OTHERS) > 4096:  # bounded: routes and shapes are few, but never trust input
            _SUMMARY_OTHERS.clear()
        others: dict = {semconv.CARBON_REQUEST_SPAN_COUNT: count, semconv.CARBON_REQUEST_ROUTE: route}
        if quality is not None:
            others[semconv.CARBON_REQUEST_QUALITY] = quality
        cached = _SUMMARY_OTHERS[key] = (others, encode_span_attributes(others))
    return cached


def _summarise(trace_id: bytes, trace: _Trace, carrier: _Held) -> RequestSummary:
    energy = operational = embodied = input_tokens = output_tokens = 0.0
    by_phase: dict[str, float] = {}  # gCO2e
    by_phase_energy: dict[str, float] = {}
    by_region: dict[str, float] = {}
    quality: str | None = None
    model = None
    route: list[tuple[int, str]] = []
    for part, origin, start in trace.parts:
        phase, span_model, span_input, span_output, span_quality, span_energy, span_operational, span_embodied, _ = part
        if not model:
            model = span_model
        if phase in _ROUTE_PHASES:
            route.append((start, origin.where))
        if phase == _PREFILL:
            input_tokens += span_input if type(span_input) in _PLAIN_NUMBERS else _number(span_input)
        elif phase == _DECODE:
            output_tokens += span_output if type(span_output) in _PLAIN_NUMBERS else _number(span_output)
        if span_quality is None:
            continue  # not priced: a router's span, or one without GPUs
        if phase in _COMPUTE and span_quality != quality:  # the same quality again leaves it as it is
            quality = semconv.worse_quality(quality, span_quality)
        energy += span_energy
        operational += span_operational
        embodied += span_embodied
        if phase:
            by_phase[phase] = by_phase.get(phase, 0.0) + span_operational + span_embodied
            by_phase_energy[phase] = by_phase_energy.get(phase, 0.0) + span_energy
        region = origin.region
        if region:
            by_region[region] = by_region.get(region, 0.0) + span_operational + span_embodied
    route_names: list[str] = []
    for _, where in sorted(route):
        if not route_names or route_names[-1] != where:
            route_names.append(where)
    count = len(trace.parts)
    route_name = ">".join(route_names)
    # by position, in the fields' order: keywords cost a dict per call on the way into __init__
    summary = RequestSummary(trace_id, model, carrier.origin.service_name, route_name, energy, operational, embodied,
                             operational + embodied, by_phase, by_region, quality, count, input_tokens, output_tokens)
    amounts = [energy, operational, embodied, operational + embodied]
    for phase, grams in by_phase.items():
        amounts += (grams, by_phase_energy[phase])
    amounts += by_region.values()
    doubles = _summary_doubles(tuple(by_phase), tuple(by_region))
    carrier_part = trace.parts[carrier.seq][0]
    if carrier_part.unsummarised and not (model and carrier_part.model is None):
        carrier.span += _summary_others(count, route_name, quality)[1] + doubles.encode(amounts)
    else:  # a summary's keys are there, or the model's key may be there without a value: looked up
        others = dict(_summary_others(count, route_name, quality)[0])
        if model and carrier_part.model is None:
            others[semconv.GEN_AI_REQUEST_MODEL] = model
        span = Span.FromString(carrier.span)
        add_span_attributes(span, {**others, **dict(zip(doubles.keys, amounts, strict=True))})
        carrier.span = span.SerializeToString()
    return summary
