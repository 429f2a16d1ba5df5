"""build_report: enriched spans and the collector's metrics in, per-request figures out.

Pure logic, like processors/: no files, no clock. The request totals come from the request
roll-up itself (run over a copy of the spans, flushing every trace), so the report's numbers are
the ones the pipeline writes onto root spans, whether or not the input was rolled up already.
GPU models come from the energy metrics' ``hw.model`` (the sampler's), else the worker's
``carbon.gpu.model``; idle vs attributed energy from the ``carbon.gpu.*`` counters.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality, Metric, ResourceMetrics
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span

from carbonspan.collector.report import counterfactual
from carbonspan.collector.report.model import (
    Breakdown,
    Counterfactual,
    Figures,
    GpuEnergyRow,
    Report,
    RequestRow,
    SpanRow,
)
from carbonspan.processors import semconv
from carbonspan.processors.facility import FacilityTables
from carbonspan.processors.gpu_profiles import normalize_gpu_model
from carbonspan.processors.intensity import IntensityProvider, StaticTableProvider
from carbonspan.processors.otlp import as_float, attributes_to_dict
from carbonspan.processors.rollup import RequestRollup, RequestSummary

UNKNOWN = "unknown"
#: qualities whose energy came from the GPU's own data: the only ones J/token figures use.
_MEASURED = (semconv.QUALITY_MEASURED, semconv.QUALITY_INTERPOLATED, semconv.QUALITY_EXTRAPOLATED)
_PHASE_TOKENS = {
    semconv.PHASE_PREFILL: semconv.GEN_AI_USAGE_INPUT_TOKENS,
    semconv.PHASE_DECODE: semconv.GEN_AI_USAGE_OUTPUT_TOKENS,
}
_LEDGER_METRICS = {
    semconv.METRIC_GPU_MEASURED_ENERGY: "measured_j",
    semconv.METRIC_GPU_ATTRIBUTED_ENERGY: "attributed_j",
    semconv.METRIC_GPU_IDLE_ENERGY: "idle_j",
}
#: what follows the region in carbon.counterfactual.<region>.gco2e.
_COUNTERFACTUAL_SUFFIX = semconv.counterfactual_attribute("").removeprefix(semconv.CARBON_COUNTERFACTUAL_PREFIX)
NO_GPU_COUNTERS = (f"the input has no {semconv.METRIC_GPU_IDLE_ENERGY}, {semconv.METRIC_GPU_ATTRIBUTED_ENERGY} "
                   f"or {semconv.METRIC_GPU_MEASURED_ENERGY} metrics: idle vs attributed energy is unknown")


def build_report(
    traces: Iterable[ResourceSpans],
    metrics: Iterable[ResourceMetrics],
    *,
    counterfactual_regions: Iterable[tuple[str, str]] | None = None,
    intensity: IntensityProvider | None = None,
    facility: FacilityTables | None = None,
) -> Report:
    """``counterfactual_regions``: (cloud.provider, cloud.region) pairs to price every request in;
    None means every region seen in the input. ``intensity``/``facility``: the tables for
    counterfactuals the spans do not carry (default: the bundled ones, as the collector's default)."""
    metrics = list(metrics)
    models = _gpu_models(metrics)
    rolled, summaries = _roll_up(traces)
    spans_by_trace = _span_rows(rolled, models)
    all_spans = [s for rows in spans_by_trace.values() for s in rows]

    regions = (counterfactual.default_regions(all_spans) if counterfactual_regions is None
               else list(counterfactual_regions))
    pricer = counterfactual.RegionPricer(intensity or StaticTableProvider(), facility or FacilityTables.default())
    measured = _breakdowns(all_spans, lambda s: s.gpu_model, _MEASURED)
    gpu_types = [m for m in measured if m != UNKNOWN]

    requests = []
    other_traces = 0
    for summary in summaries:
        trace_spans = spans_by_trace.get(summary.trace_id.hex(), ())
        if not any(s.phase for s in trace_spans):
            other_traces += 1  # not an LLM request: e.g. vLLM's own start-up trace ("Overall Loading")
            continue
        region_cf = {region: counterfactual.region_counterfactual(trace_spans, provider, region, pricer)
                     for provider, region in regions}
        gpu_cf = {model: counterfactual.gpu_counterfactual(trace_spans, model, measured[model]) for model in gpu_types}
        requests.append(_request_row(summary, trace_spans, region_cf, gpu_cf))
    requests.sort(key=lambda r: (r.start_ns, r.trace_id))

    gpu_energy = _gpu_energy(metrics)
    return Report(
        requests=tuple(requests),
        regions=tuple(_breakdowns(all_spans, lambda s: s.region).values()),
        gpu_models=tuple(_breakdowns(all_spans, lambda s: s.gpu_model).values()),
        gpu_energy=gpu_energy,
        gpu_energy_note=None if gpu_energy else NO_GPU_COUNTERS,
        counterfactual_regions=tuple(region for _, region in regions),
        counterfactual_gpus=tuple(gpu_types),
        region_pricing=pricer.used,
        gpu_joules_per_token=counterfactual.joules_per_token({m: measured[m] for m in gpu_types}),
        spans=len(all_spans),
        unpriced_spans=sum(1 for s in all_spans if not s.priced),
        other_traces=other_traces,
    )


# ---------------------------------------------------------------------------------------- spans
def _roll_up(traces: Iterable[ResourceSpans]) -> tuple[list[ResourceSpans], list[RequestSummary]]:
    """The roll-up writes onto root spans: it runs on copies, leaving the caller's messages alone."""
    rollup = RequestRollup()
    for rs in traces:
        copy = ResourceSpans()
        copy.CopyFrom(rs)
        rollup.add([copy], 0)
    out = rollup.release(0, flush=True)
    return out.spans, out.requests


def _span_rows(resource_spans: Sequence[ResourceSpans], models: Mapping[str, str]) -> dict[str, list[SpanRow]]:
    by_trace: dict[str, list[SpanRow]] = {}
    for rs in resource_spans:
        resource = attributes_to_dict(rs.resource.attributes)
        for ss in rs.scope_spans:
            for span in ss.spans:
                by_trace.setdefault(span.trace_id.hex(), []).append(_span_row(span, resource, models))
    return {trace: _with_depths(rows) for trace, rows in by_trace.items()}


def _span_row(span: Span, resource: Mapping[str, Any], models: Mapping[str, str]) -> SpanRow:
    attrs = attributes_to_dict(span.attributes)
    phase = attrs.get(semconv.CARBON_PHASE)
    gpu_ids = resource.get(semconv.CARBON_GPU_IDS) or []
    gpu_ids = [gpu_ids] if isinstance(gpu_ids, str) else [str(g) for g in gpu_ids]
    tokens = as_float(attrs.get(semconv.CARBON_TOKENS))
    if tokens is None and phase in _PHASE_TOKENS:
        tokens = as_float(attrs.get(_PHASE_TOKENS[phase]))

    def number(key: str) -> float:
        return as_float(attrs.get(key)) or 0.0

    prefix, suffix = semconv.CARBON_COUNTERFACTUAL_PREFIX, _COUNTERFACTUAL_SUFFIX
    return SpanRow(
        trace_id=span.trace_id.hex(),
        span_id=span.span_id.hex(),
        parent_span_id=span.parent_span_id.hex(),
        name=span.name,
        service=resource.get(semconv.SERVICE_NAME),
        provider=resource.get(semconv.CLOUD_PROVIDER),
        region=resource.get(semconv.CLOUD_REGION),
        phase=phase,
        gpu_model=_model_of(gpu_ids, resource, models),
        gpu_count=len(gpu_ids),
        start_ns=span.start_time_unix_nano,
        end_ns=max(span.end_time_unix_nano, span.start_time_unix_nano),
        tokens=max(tokens or 0.0, 0.0),
        energy_j=number(semconv.CARBON_ENERGY_JOULES),
        facility_j=number(semconv.CARBON_ENERGY_FACILITY_JOULES),
        operational_g=number(semconv.CARBON_OPERATIONAL_GCO2E),
        embodied_g=number(semconv.CARBON_EMBODIED_GCO2E),
        total_g=number(semconv.CARBON_TOTAL_GCO2E),
        quality=attrs.get(semconv.CARBON_QUALITY),
        pue=as_float(attrs.get(semconv.CARBON_PUE)),
        intensity=as_float(attrs.get(semconv.CARBON_INTENSITY)),
        intensity_source=attrs.get(semconv.CARBON_INTENSITY_SOURCE),
        counterfactual_g={key[len(prefix):-len(suffix)]: grams for key, value in attrs.items()
                          if key.startswith(prefix) and key.endswith(suffix)
                          and (grams := as_float(value)) is not None},
    )


def _with_depths(rows: list[SpanRow]) -> list[SpanRow]:
    """Rows in tree order (each span before its children, siblings by start time), each with its
    depth below the trace's root; a span whose parent never arrived counts as a root, and spans
    caught in a parent cycle (or duplicated ids) are shown flat at the end rather than lost."""
    ids = {row.span_id for row in rows}
    order = sorted(range(len(rows)), key=lambda i: (rows[i].start_ns, rows[i].end_ns))
    children: dict[str, list[int]] = {}
    for i in order:
        parent = rows[i].parent_span_id if rows[i].parent_span_id in ids else ""
        children.setdefault(parent, []).append(i)
    out: list[SpanRow] = []
    seen: set[int] = set()
    stack = [(i, 0) for i in reversed(children.get("", []))]
    while stack:
        i, depth = stack.pop()
        if i in seen:
            continue
        seen.add(i)
        out.append(replace(rows[i], depth=depth))
        stack.extend((child, depth + 1) for child in reversed(children.get(rows[i].span_id, [])))
    out += [replace(rows[i], depth=0) for i in order if i not in seen]
    return out


def _model_of(gpu_ids: Sequence[str], resource: Mapping[str, Any], models: Mapping[str, str]) -> str | None:
    for gpu_id in gpu_ids:
        if gpu_id in models:
            return models[gpu_id]
    name = resource.get(semconv.CARBON_GPU_MODEL)
    return (normalize_gpu_model(name) or name) if isinstance(name, str) and name else None


# ---------------------------------------------------------------------------------------- requests
def _request_row(summary: RequestSummary, spans: Sequence[SpanRow], region_cf: dict[str, Counterfactual],
                 gpu_cf: dict[str, Counterfactual]) -> RequestRow:
    root = next((s for s in spans if s.depth == 0 and not s.parent_span_id), spans[0] if spans else None)
    phase_energy: dict[str, float] = {}
    region_energy: dict[str, float] = {}
    for span in spans:
        if span.priced and span.phase:
            phase_energy[span.phase] = phase_energy.get(span.phase, 0.0) + span.energy_j
        if span.priced and span.region:
            region_energy[span.region] = region_energy.get(span.region, 0.0) + span.energy_j
    return RequestRow(
        trace_id=summary.trace_id.hex(),
        name=root.name if root else "",
        service=summary.service_name,
        model=summary.model,
        route=summary.route,
        quality=summary.quality,
        start_ns=min((s.start_ns for s in spans), default=0),
        end_ns=max((s.end_ns for s in spans), default=0),
        input_tokens=summary.input_tokens,
        output_tokens=summary.output_tokens,
        energy_j=summary.energy_j,
        operational_g=summary.operational_g,
        embodied_g=summary.embodied_g,
        total_g=summary.total_g,
        by_phase={p: Figures(phase_energy.get(p, 0.0), g) for p, g in summary.by_phase.items()},
        by_region={r: Figures(region_energy.get(r, 0.0), g) for r, g in summary.by_region.items()},
        spans=tuple(spans),
        region_counterfactuals=region_cf,
        gpu_counterfactuals=gpu_cf,
    )


def _breakdowns(spans: Iterable[SpanRow], key, qualities: Sequence[str] | None = None) -> dict[str, Breakdown]:
    """Priced spans (of the given qualities, else all) summed by ``key(span)``; keys sorted, unknown last."""
    sums: dict[str, dict[str, Any]] = {}
    for span in spans:
        if not span.priced or (qualities is not None and span.quality not in qualities):
            continue
        acc = sums.setdefault(key(span) or UNKNOWN, {
            "spans": 0, "traces": set(), "energy_j": 0.0, "facility_j": 0.0, "operational_g": 0.0,
            "embodied_g": 0.0, "total_g": 0.0, "energy_by_phase": {}, "tokens_by_phase": {},
            "embodied_by_phase": {}})
        acc["spans"] += 1
        acc["traces"].add(span.trace_id)
        for name in ("energy_j", "facility_j", "operational_g", "embodied_g", "total_g"):
            acc[name] += getattr(span, name)
        if span.phase in semconv.COMPUTE_PHASES:
            for name, value in (("energy_by_phase", span.energy_j), ("tokens_by_phase", span.tokens),
                                ("embodied_by_phase", span.embodied_g)):
                acc[name][span.phase] = acc[name].get(span.phase, 0.0) + value
    ordered = sorted(sums, key=lambda k: (k == UNKNOWN, k))
    return {k: Breakdown(key=k, requests=len(sums[k].pop("traces")), **sums[k]) for k in ordered}


# ---------------------------------------------------------------------------------------- metrics
def _points(metric: Metric):
    kind = metric.WhichOneof("data")
    return getattr(metric, kind).data_points if kind in ("sum", "gauge") else ()


def _gpu_models(metrics: Sequence[ResourceMetrics]) -> dict[str, str]:
    """GPU UUID -> canonical model, from any metric point that names both (hw.energy, carbon.gpu.*)."""
    models: dict[str, str] = {}
    for rm in metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                for point in _points(metric):
                    attrs = attributes_to_dict(point.attributes)
                    gpu_id, name = attrs.get(semconv.HW_ID), attrs.get(semconv.HW_MODEL)
                    if gpu_id and isinstance(name, str) and name:
                        models[str(gpu_id)] = normalize_gpu_model(name) or name
    return models


def _gpu_energy(metrics: Sequence[ResourceMetrics]) -> tuple[GpuEnergyRow, ...]:
    """Per GPU, the newest value of each cumulative carbon.gpu.* counter (delta points are summed)."""
    newest: dict[tuple[str, str], tuple[int, float]] = {}
    labels: dict[str, dict[str, Any]] = {}
    for rm in metrics:
        resource = attributes_to_dict(rm.resource.attributes)
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                field = _LEDGER_METRICS.get(metric.name)
                if field is None or metric.WhichOneof("data") != "sum":
                    continue
                delta = metric.sum.aggregation_temporality == AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
                for point in metric.sum.data_points:
                    attrs = {**resource, **attributes_to_dict(point.attributes)}
                    gpu_id = attrs.get(semconv.HW_ID)
                    if not gpu_id:
                        continue
                    value = point.as_double if point.WhichOneof("value") == "as_double" else float(point.as_int)
                    labels.setdefault(str(gpu_id), {}).update(attrs)
                    key = (str(gpu_id), field)
                    seen = newest.get(key)
                    if delta:
                        newest[key] = (point.time_unix_nano, value + (seen[1] if seen else 0.0))
                    elif seen is None or point.time_unix_nano >= seen[0]:
                        newest[key] = (point.time_unix_nano, value)
    rows = []
    for gpu_id in sorted(labels):
        attrs = labels[gpu_id]
        model = attrs.get(semconv.HW_MODEL)
        values = {field: newest[(gpu_id, field)][1] if (gpu_id, field) in newest else None
                  for field in _LEDGER_METRICS.values()}
        rows.append(GpuEnergyRow(gpu_id=gpu_id, model=(normalize_gpu_model(model) or model) if model else None,
                                 region=attrs.get(semconv.CLOUD_REGION), **values))
    return tuple(rows)
