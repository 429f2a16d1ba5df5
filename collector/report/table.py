"""The report as plain text for a terminal: one row per request, totals, then the breakdowns.

Figures are printed with four significant digits (a request's CO2 spans micrograms to grams), so
that every number can be read back and compared with the span attribute it came from.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from carbonspan.collector.report.model import Report
from carbonspan.processors import semconv

_RULE = "-"


def number(value: float | None) -> str:
    """Four significant digits; '-' for a figure that does not exist."""
    return "-" if value is None else f"{value:.4g}"


def short_id(trace_id: str) -> str:
    return trace_id[:12]


def grid(header: Sequence[str], rows: Sequence[Sequence[str] | None], *, left: int = 1) -> str:
    """Columns padded to their widest cell; the first ``left`` columns left-aligned, numbers right.
    A ``None`` row is drawn as a rule (before a totals row)."""
    cells = [header, *(r for r in rows if r is not None)]
    widths = [max(len(str(cell)) for cell in column) for column in zip(*cells, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(str(c).ljust(w) if i < left else str(c).rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    rule = line([_RULE * w for w in widths])
    return "\n".join([line(header), rule, *(rule if r is None else line(r) for r in rows)])


def render_table(report: Report, top: int | None = None) -> str:
    """The per-request table (the ``top`` heaviest requests when given, else all) and the sections
    that explain it: totals, per region, per GPU model, idle vs attributed energy, counterfactuals."""
    return "\n\n".join(part for part in (
        _summary(report, top), _requests(report, top), _regions(report), _gpu_models(report),
        _gpu_energy(report), _counterfactuals(report, top), _input_notes(report)) if part)


def _summary(report: Report, top: int | None) -> str:
    shown = len(report.heaviest(top))
    which = f"the {shown} heaviest of {len(report.requests)}" if shown < len(report.requests) else "all"
    return (f"{len(report.requests)} requests, {report.spans} spans ({report.unpriced_spans} not priced); "
            f"{number(report.energy_j)} J, {number(report.total_g)} gCO2e "
            f"({number(report.operational_g)} operational + {number(report.embodied_g)} embodied). "
            f"Requests shown: {which}, heaviest first.{report.other_traces_note}")


def _requests(report: Report, top: int | None) -> str:
    phases, regions = report.phases, report.region_names
    header = ["trace", "model", "route", "quality", "in tok", "out tok", "energy J",
              *(f"{p} J" for p in phases), *(f"{p} g" for p in phases), *(f"{r} g" for r in regions),
              "oper g", "embod g", "total g"]
    rows: list[list[str] | None] = []
    for r in report.heaviest(top):
        rows.append([
            short_id(r.trace_id), r.model or "-", r.route or "-", r.quality or "-",
            number(r.input_tokens), number(r.output_tokens), number(r.energy_j),
            *(number(r.by_phase[p].energy_j) if p in r.by_phase else "-" for p in phases),
            *(number(r.by_phase[p].total_g) if p in r.by_phase else "-" for p in phases),
            *(number(r.by_region[g].total_g) if g in r.by_region else "-" for g in regions),
            number(r.operational_g), number(r.embodied_g), number(r.total_g),
        ])

    rows.append(None)
    rows.append([
        f"TOTAL ({len(report.requests)})", "", "", "",
        number(sum(r.input_tokens for r in report.requests)), number(sum(r.output_tokens for r in report.requests)),
        number(report.energy_j), *(number(report.phase_total(p).energy_j) for p in phases),
        *(number(report.phase_total(p).total_g) for p in phases),
        *(number(report.region_total(g).total_g) for g in regions),
        number(report.operational_g), number(report.embodied_g), number(report.total_g),
    ])
    return "Requests\n" + grid(header, rows, left=4)


def _regions(report: Report) -> str:
    header = ["region", "requests", "spans", "energy J", "gCO2e/kWh", "oper g", "embod g", "total g", "g/1k tok"]
    rows = [[b.key, str(b.requests), str(b.spans), number(b.energy_j), number(b.mean_intensity),
             number(b.operational_g), number(b.embodied_g), number(b.total_g), number(b.g_per_1k_tokens)]
            for b in report.regions]
    return "By region\n" + grid(header, rows)


def _gpu_models(report: Report) -> str:
    header = ["GPU model", "requests", "spans", "energy J", *(f"{p} J/tok" for p in semconv.COMPUTE_PHASES),
              "total g", "g/1k tok"]
    rows = [[b.key, str(b.requests), str(b.spans), number(b.energy_j),
             *(number(b.joules_per_token(p)) for p in semconv.COMPUTE_PHASES), number(b.total_g),
             number(b.g_per_1k_tokens)]
            for b in report.gpu_models]
    return "By GPU model\n" + grid(header, rows)


def _gpu_energy(report: Report) -> str:
    if not report.gpu_energy:
        return f"Idle vs attributed energy per GPU: {report.gpu_energy_note}"
    header = ["GPU", "model", "region", "measured J", "attributed J", "idle J", "idle %"]
    rows = [[g.gpu_id, g.model or "-", g.region or "-", number(g.measured_j), number(g.attributed_j),
             number(g.idle_j), "-" if g.idle_share is None else f"{g.idle_share * 100:.1f}"]
            for g in report.gpu_energy]
    return "Idle vs attributed energy per GPU\n" + grid(header, rows, left=3)


def _counterfactuals(report: Report, top: int | None) -> str:
    if not report.requests or not (report.counterfactual_regions or report.counterfactual_gpus):
        return ""
    header = ["trace", "actual g", *(f"in {r} g" for r in report.counterfactual_regions),
              *(f"on {m} g" for m in report.counterfactual_gpus)]
    rows: list[list[str] | None] = [[short_id(r.trace_id), number(r.total_g),
             *(number(r.region_counterfactuals[g].total_g) for g in report.counterfactual_regions),
             *(number(r.gpu_counterfactuals[m].total_g) for m in report.counterfactual_gpus)]
            for r in report.heaviest(top)]
    rows.append(None)
    rows.append(["TOTAL", number(report.total_g),
                 *(_sum_or_none(r.region_counterfactuals[g].total_g for r in report.requests)
                   for g in report.counterfactual_regions),
                 *(_sum_or_none(r.gpu_counterfactuals[m].total_g for r in report.requests)
                   for m in report.counterfactual_gpus)])
    notes = [f"  {p.region}: PUE {number(p.pue)} ({p.pue_source}) x {number(p.intensity)} gCO2e/kWh "
             f"({p.intensity_source}{', zone ' + p.zone if p.zone else ''})" for p in report.region_pricing]
    per_token = [f"  {model}: " + ", ".join(f"{phase} {number(v)} J/token" for phase, v in phases.items())
                 for model, phases in report.gpu_joules_per_token.items()]
    text = "Counterfactuals (same energy in each region; same tokens on each GPU type)\n" + grid(header, rows)
    if notes:
        text += (f"\nRegions priced from the tables (where spans carry no "
                 f"{semconv.CARBON_COUNTERFACTUAL_PREFIX}*):\n" + "\n".join(notes))
    if per_token:
        text += "\nGPU types at their measured J/token:\n" + "\n".join(per_token)
    return text


def _sum_or_none(values: Iterable[float | None]) -> str:
    values = list(values)
    return "-" if any(v is None for v in values) else number(sum(values))


def _input_notes(report: Report) -> str:
    if not report.bad_lines:
        return ""
    shown = [f"  line {b.line}: {b.reason}" for b in report.bad_lines[:10]]
    more = len(report.bad_lines) - len(shown)
    return (f"{len(report.bad_lines)} line(s) of {report.source or 'the input'} could not be read and were skipped:\n"
            + "\n".join(shown) + (f"\n  ... and {more} more" if more else ""))
