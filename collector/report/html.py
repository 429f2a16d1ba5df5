"""The report as one self-contained HTML page: inline style and script, no external asset, no network.

Every piece of text from the input (span names, services, regions, models, sources) is escaped.
The page is readable without its script; the script only makes tables sortable by a header click
and marks ``<body data-ready="1">`` once it ran, which the Chromium test checks.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

from carbonspan.collector.report.model import Counterfactual, Report, RequestRow, SpanRow
from carbonspan.collector.report.table import number, short_id
from carbonspan.processors import semconv

_UNPRICED_COLOUR = "#b8b8b8"

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1d2327;max-width:1400px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd}
h3{font-size:14px;margin:18px 0 4px;font-weight:600}
table{border-collapse:collapse;margin:6px 0}th,td{padding:3px 8px;border-bottom:1px solid #eee;text-align:right}
th{background:#f4f6f8;cursor:pointer;user-select:none}td{white-space:nowrap}td.t,th.t{text-align:left}
tr.total td{font-weight:600;border-top:2px solid #999}
.note{color:#6b4f00;background:#fff7de;padding:6px 10px;border-radius:4px}
.muted{color:#777}.wf{display:grid;grid-template-columns:minmax(220px,28%) 1fr minmax(190px,18%);gap:2px 8px;
align-items:center;margin:4px 0 12px}.wf .lab{white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.track{position:relative;height:16px;background:#f2f2f2;border-radius:2px}
.bar{position:absolute;top:1px;bottom:1px;border-radius:2px;min-width:2px}
.hbar{display:inline-block;height:10px;vertical-align:middle;border-radius:2px}
.legend span{display:inline-block;width:28px;height:10px}
"""

_SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, column) {
    th.addEventListener("click", function () {
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      var keep = rows.filter(function (r) { return r.classList.contains("total"); });
      var sortable = rows.filter(function (r) { return !r.classList.contains("total"); });
      var up = th.dataset.order !== "up"; th.dataset.order = up ? "up" : "down";
      function key(r) { var t = r.cells[column].textContent, n = parseFloat(t); return isNaN(n) ? t : n; }
      sortable.sort(function (a, b) {
        var x = key(a), y = key(b); return (x > y ? 1 : x < y ? -1 : 0) * (up ? 1 : -1);
      });
      sortable.concat(keep).forEach(function (r) { body.appendChild(r); });
    });
  });
});
document.body.dataset.ready = "1";
"""


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def co2_colour(grams: float, heaviest: float) -> str:
    """Green for the lightest spans to red for the heaviest, on a square-root scale (CO2 per span
    spans orders of magnitude; a linear scale would paint all but the heaviest green)."""
    share = math.sqrt(grams / heaviest) if heaviest > 0 and grams > 0 else 0.0
    return f"hsl({120 * (1 - min(share, 1.0)):.0f},70%,45%)"


def _cell(value: object, *, text: bool = False, title: str | None = None) -> str:
    attrs = (' class="t"' if text else "") + (f' title="{esc(title)}"' if title else "")
    return f"<td{attrs}>{esc(value)}</td>"


def _table(header: Sequence[str], rows: Iterable[str], *, text_columns: int = 1, table_id: str = "",
           total: str = "") -> str:
    heads = "".join(f'<th class="t">{esc(h)}</th>' if i < text_columns else f"<th>{esc(h)}</th>"
                    for i, h in enumerate(header))
    ident = f' id="{esc(table_id)}"' if table_id else ""
    return (f'<table class="sortable"{ident}><thead><tr>{heads}</tr></thead><tbody>'
            f"{''.join(rows)}{total}</tbody></table>")


def render_html(report: Report, top: int | None = None) -> str:
    """The page as a string; ``top`` limits the waterfalls to the heaviest requests (None: all)."""
    title = f"carbonspan report{f' — {report.source}' if report.source else ''}"
    body = "".join((
        f"<h1>{esc(title)}</h1>", _summary(report), _requests(report), _waterfalls(report, top), _regions(report),
        _gpu_models(report), _gpu_energy(report), _counterfactuals(report), _bad_lines(report)))
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f"<style>{_STYLE}</style></head><body>{body}<script>{_SCRIPT}</script></body></html>\n")


def write_html(report: Report, path: str | Path, top: int | None = None) -> Path:
    path = Path(path)
    path.write_text(render_html(report, top), encoding="utf-8")
    return path


def _summary(report: Report) -> str:
    return (f'<p id="summary">{len(report.requests)} requests, {report.spans} spans '
            f"({report.unpriced_spans} not priced): <b>{esc(number(report.energy_j))} J</b>, "
            f"<b>{esc(number(report.total_g))} gCO2e</b> ({esc(number(report.operational_g))} operational + "
            f"{esc(number(report.embodied_g))} embodied).{esc(report.other_traces_note)}</p>")


def _requests(report: Report) -> str:
    phases, regions = report.phases, report.region_names
    header = ["trace", "model", "route", "quality", "in tok", "out tok", "energy J", *(f"{p} g" for p in phases),
              *(f"{r} g" for r in regions), "operational g", "embodied g", "total g"]
    rows = []
    for r in report.requests:
        rows.append(f'<tr class="request" data-trace="{esc(r.trace_id)}">' + "".join((
            _cell(short_id(r.trace_id), text=True, title=r.trace_id), _cell(r.model or "-", text=True),
            _cell(r.route or "-", text=True), _cell(r.quality or "-", text=True), _cell(number(r.input_tokens)),
            _cell(number(r.output_tokens)), _cell(number(r.energy_j)),
            *(_cell(number(r.by_phase[p].total_g) if p in r.by_phase else "-") for p in phases),
            *(_cell(number(r.by_region[g].total_g) if g in r.by_region else "-") for g in regions),
            _cell(number(r.operational_g)), _cell(number(r.embodied_g)), _cell(number(r.total_g)))) + "</tr>")
    total = '<tr class="total">' + "".join((
        _cell(f"TOTAL ({len(report.requests)})", text=True), _cell("", text=True), _cell("", text=True),
        _cell("", text=True), _cell(number(sum(r.input_tokens for r in report.requests))),
        _cell(number(sum(r.output_tokens for r in report.requests))), _cell(number(report.energy_j)),
        *(_cell(number(report.phase_total(p).total_g)) for p in phases),
        *(_cell(number(report.region_total(g).total_g)) for g in regions),
        _cell(number(report.operational_g)), _cell(number(report.embodied_g)), _cell(number(report.total_g)))) + "</tr>"
    return "<h2>Requests</h2>" + _table(header, rows, text_columns=4, table_id="requests", total=total)


def _waterfalls(report: Report, top: int | None) -> str:
    shown = report.heaviest(top)
    if not shown:
        return ""
    heaviest = max((s.total_g for r in report.requests for s in r.spans), default=0.0)
    legend = "".join(f'<span style="background:{co2_colour(heaviest * f * f, heaviest)}"></span>'
                     for f in (0.0, 0.25, 0.5, 0.75, 1.0))
    which = f"the {len(shown)} heaviest of {len(report.requests)} requests" if top is not None and len(shown) < len(
        report.requests) else "every request, heaviest first"
    return (f"<h2>Trace waterfalls</h2><p class=\"legend muted\">{esc(which)}; bars coloured by the span's gCO2e: "
            f"0 {legend} {esc(number(heaviest))} g; grey: not priced.</p>"
            + "".join(_waterfall(r, heaviest) for r in shown))


def _waterfall(request: RequestRow, heaviest: float) -> str:
    start, length = request.start_ns, max(request.end_ns - request.start_ns, 1)
    rows = []
    for span in request.spans:
        left = (span.start_ns - start) / length * 100
        width = max((span.end_ns - span.start_ns) / length * 100, 0.3)
        colour = co2_colour(span.total_g, heaviest) if span.priced else _UNPRICED_COLOUR
        label = f"{span.service or '?'} · {span.name}" + (f" @ {span.region}" if span.region else "")
        figures = (f"{number(span.energy_j)} J · {number(span.total_g)} g · {span.quality}" if span.priced
                   else "not priced")
        tip = _span_tooltip(span)
        rows.append(f'<div class="lab" style="padding-left:{span.depth * 14}px" title="{esc(label)}">{esc(label)}</div>'
                    f'<div class="track"><div class="bar" style="left:{left:.3f}%;width:{width:.3f}%;'
                    f'background:{colour}" title="{esc(tip)}"></div></div><div class="muted">{esc(figures)}</div>')
    duration_ms = (request.end_ns - request.start_ns) / 1e6
    return (f'<section class="waterfall" data-trace="{esc(request.trace_id)}"><h3>{esc(request.trace_id)} · '
            f"{esc(request.model or '-')} · {esc(request.route or '-')} · {esc(number(request.total_g))} gCO2e · "
            f"{esc(number(request.energy_j))} J · {duration_ms:.0f} ms</h3><div class=\"wf\">{''.join(rows)}</div>"
            "</section>")


def _span_tooltip(span: SpanRow) -> str:
    if not span.priced:
        return f"{span.name}: not priced (no {semconv.CARBON_PHASE} or no {semconv.CARBON_GPU_IDS})"
    parts = [f"{span.name} ({span.phase or '-'})", f"{number(span.energy_j)} J on {span.gpu_count} x "
             f"{span.gpu_model or 'unknown GPU'}", f"{number(span.operational_g)} g operational + "
             f"{number(span.embodied_g)} g embodied", f"PUE {number(span.pue)}, {number(span.intensity)} gCO2e/kWh "
             f"({span.intensity_source or '-'})", f"{number(span.tokens)} tokens", f"quality {span.quality}"]
    return "\n".join(parts)


def _share_bar(value: float, largest: float, colour: str = "#3b7dd8") -> str:
    width = 0 if largest <= 0 else value / largest * 160
    return f'<span class="hbar" style="width:{width:.1f}px;background:{colour}"></span>'


def _regions(report: Report) -> str:
    largest = max((b.total_g for b in report.regions), default=0.0)
    rows = ["<tr>" + "".join((
        _cell(b.key, text=True), _cell(b.requests), _cell(b.spans), _cell(number(b.energy_j)),
        _cell(number(b.mean_intensity)), _cell(number(b.operational_g)), _cell(number(b.embodied_g)),
        _cell(number(b.total_g)), _cell(number(b.g_per_1k_tokens)))) + f'<td class="t">{_share_bar(b.total_g, largest)}'
        "</td></tr>" for b in report.regions]
    header = ["region", "requests", "spans", "energy J", "gCO2e/kWh", "operational g", "embodied g", "total g",
              "g/1k tokens", "share"]
    return "<h2>By region</h2>" + _table(header, rows, table_id="regions")


def _gpu_models(report: Report) -> str:
    largest = max((b.total_g for b in report.gpu_models), default=0.0)
    rows = ["<tr>" + "".join((
        _cell(b.key, text=True), _cell(b.requests), _cell(b.spans), _cell(number(b.energy_j)),
        *(_cell(number(b.joules_per_token(p))) for p in semconv.COMPUTE_PHASES), _cell(number(b.total_g)),
        _cell(number(b.g_per_1k_tokens)))) + f'<td class="t">{_share_bar(b.total_g, largest)}</td></tr>'
        for b in report.gpu_models]
    header = ["GPU model", "requests", "spans", "energy J", *(f"{p} J/token" for p in semconv.COMPUTE_PHASES),
              "total g", "g/1k tokens", "share"]
    return "<h2>By GPU model</h2>" + _table(header, rows, table_id="gpu-models")


def _gpu_energy(report: Report) -> str:
    if not report.gpu_energy:
        return ('<h2>Idle vs attributed energy</h2>'
                f'<p class="note" id="gpu-energy-note">{esc(report.gpu_energy_note)}</p>')
    largest = max((g.measured_j or 0.0 for g in report.gpu_energy), default=0.0)
    rows = []
    for g in report.gpu_energy:
        bars = _share_bar(g.attributed_j or 0.0, largest) + _share_bar(g.idle_j or 0.0, largest, "#c9ced6")
        idle = "-" if g.idle_share is None else f"{g.idle_share * 100:.1f}"
        rows.append("<tr>" + "".join((
            _cell(g.gpu_id, text=True), _cell(g.model or "-", text=True), _cell(g.region or "-", text=True),
            _cell(number(g.measured_j)), _cell(number(g.attributed_j)), _cell(number(g.idle_j)), _cell(idle)))
            + f'<td class="t">{bars}</td></tr>')
    header = ["GPU", "model", "region", "measured J", "attributed J", "idle J", "idle %", "attributed | idle"]
    return ("<h2>Idle vs attributed energy</h2>"
            + _table(header, rows, text_columns=3, table_id="gpu-energy"))


def _cf_cell(cf: Counterfactual, actual: float) -> str:
    if cf.total_g is None:
        return _cell("n/a", title=cf.basis)
    change = f" ({(cf.total_g / actual - 1) * 100:+.0f}%)" if actual > 0 else ""
    return _cell(f"{number(cf.total_g)}{change}", title=cf.basis)


def _cf_total(values: list[float | None], actual: float) -> str:
    if any(v is None for v in values):
        return _cell("n/a", title="some requests cannot be priced this way")
    return _cf_cell(Counterfactual(sum(v for v in values if v is not None), ""), actual)


def _counterfactuals(report: Report) -> str:
    regions, gpus = report.counterfactual_regions, report.counterfactual_gpus
    if not report.requests or not (regions or gpus):
        return ""
    header = ["trace", "actual g", *(f"in {r} g" for r in regions), *(f"on {m} g" for m in gpus)]
    rows = ["<tr>" + "".join((
        _cell(short_id(r.trace_id), text=True, title=r.trace_id), _cell(number(r.total_g)),
        *(_cf_cell(r.region_counterfactuals[g], r.total_g) for g in regions),
        *(_cf_cell(r.gpu_counterfactuals[m], r.total_g) for m in gpus))) + "</tr>" for r in report.requests]
    total = '<tr class="total">' + "".join((
        _cell("TOTAL", text=True), _cell(number(report.total_g)),
        *(_cf_total([r.region_counterfactuals[g].total_g for r in report.requests], report.total_g) for g in regions),
        *(_cf_total([r.gpu_counterfactuals[m].total_g for r in report.requests], report.total_g) for m in gpus),
    )) + "</tr>"
    pricing = "".join(
        f"<li>{esc(p.region)}: PUE {esc(number(p.pue))} ({esc(p.pue_source)}) × {esc(number(p.intensity))} gCO2e/kWh "
        f"({esc(p.intensity_source)}{esc(', zone ' + p.zone) if p.zone else ''})</li>" for p in report.region_pricing)
    per_token = "".join(
        f"<li>{esc(model)}: " + ", ".join(f"{esc(phase)} {esc(number(v))} J/token" for phase, v in phases.items())
        + "</li>" for model, phases in report.gpu_joules_per_token.items())
    return ("<h2>Counterfactuals</h2><p class=\"muted\">What each request would have emitted with the same energy in "
            "each region (its PUE and grid intensity, the same embodied carbon), and with the same tokens on each "
            "GPU type at that type's measured J/token, in the request's own regions. Hover a cell for its basis.</p>"
            + _table(header, rows, table_id="counterfactuals", total=total)
            + (f"<h3>Regions priced from the tables (spans without {esc(semconv.CARBON_COUNTERFACTUAL_PREFIX)}*)</h3>"
               f"<ul id=\"region-pricing\">{pricing}</ul>" if pricing else "")
            + (f'<h3>Measured J/token by GPU type</h3><ul id="joules-per-token">{per_token}</ul>' if per_token
               else ""))


def _bad_lines(report: Report) -> str:
    if not report.bad_lines:
        return ""
    items = "".join(f"<li>line {b.line}: {esc(b.reason)}</li>" for b in report.bad_lines[:50])
    more = len(report.bad_lines) - min(len(report.bad_lines), 50)
    return (f'<h2>Input lines skipped</h2><p class="note">{len(report.bad_lines)} line(s) could not be read.</p>'
            f'<ul id="bad-lines">{items}{f"<li>… and {more} more</li>" if more else ""}</ul>')
