"""carbonspan report on real enriched data: a fleet run through the join and the roll-up, written as
OTLP/JSON lines, read back, and compared with the span attributes the pipeline wrote."""

from __future__ import annotations

import re

import pytest
from report_data import JOIN_COUNTERFACTUALS, build_fleet, write_otlp_lines

from carbonspan.collector.cli import main
from carbonspan.collector.report import build_report, load_file, render_table, report_file
from carbonspan.collector.report.build import NO_GPU_COUNTERS
from carbonspan.processors import semconv
from carbonspan.processors.facility import FacilityTables
from carbonspan.processors.intensity import GridLocation, StaticTableProvider
from carbonspan.processors.otlp import attributes_to_dict

PRINTED = 5e-4  # the table prints four significant digits


@pytest.fixture(scope="module")
def fleet():
    return build_fleet()


@pytest.fixture
def otlp_file(fleet, tmp_path):
    return write_otlp_lines(fleet, tmp_path / "traces.jsonl")


def spans_of(fleet) -> list[tuple[dict, dict]]:
    return [(attributes_to_dict(rs.resource.attributes), attributes_to_dict(span.attributes))
            for rs in fleet.traces for ss in rs.scope_spans for span in ss.spans]


def root_attributes(fleet, trace_id: str) -> dict:
    (root,) = [attrs for rs in fleet.traces for ss in rs.scope_spans for span in ss.spans
               if span.trace_id.hex() == trace_id and not span.parent_span_id
               for attrs in [attributes_to_dict(span.attributes)]]
    return root


def table_rows(text: str, section: str) -> tuple[list[str], dict[str, list[str]]]:
    """Header and rows (by first cell) of one section of render_table's output."""
    block = text.split(f"\n{section}\n", 1)[1].split("\n\n", 1)[0].splitlines()
    header = re.split(r"\s{2,}", block[0].strip())
    rows = {}
    for line in block[2:]:
        if set(line.strip()) <= {"-", " "}:
            continue
        cells = re.split(r"\s{2,}", line.strip())
        rows[cells[0]] = cells
    return header, rows


def test_table_figures_equal_the_span_attributes(fleet, otlp_file, tmp_path, capsys):
    assert main(["report", str(otlp_file), "--html", str(tmp_path / "out.html")]) == 0
    out = capsys.readouterr().out
    header, rows = table_rows(out, "Requests")
    assert len([key for key in rows if not key.startswith("TOTAL")]) == 3
    for trace_id in fleet.trace_ids:
        cells = dict(zip(header, rows[trace_id[:12]], strict=True))
        root = root_attributes(fleet, trace_id)
        assert float(cells["energy J"]) == pytest.approx(root[semconv.CARBON_REQUEST_ENERGY_JOULES], rel=PRINTED)
        assert float(cells["total g"]) == pytest.approx(root[semconv.CARBON_REQUEST_TOTAL_GCO2E], rel=PRINTED)
        assert float(cells["oper g"]) == pytest.approx(root[semconv.CARBON_REQUEST_OPERATIONAL_GCO2E], rel=PRINTED)
        assert float(cells["embod g"]) == pytest.approx(root[semconv.CARBON_REQUEST_EMBODIED_GCO2E], rel=PRINTED)
        assert cells["route"] == root[semconv.CARBON_REQUEST_ROUTE]
        assert cells["quality"] == root[semconv.CARBON_REQUEST_QUALITY] == semconv.QUALITY_MEASURED
        for phase in semconv.COMPUTE_PHASES:
            assert float(cells[f"{phase} g"]) == pytest.approx(root[semconv.request_phase_gco2e(phase)], rel=PRINTED)
            assert float(cells[f"{phase} J"]) == pytest.approx(root[semconv.request_phase_energy(phase)], rel=PRINTED)
        for region in ("europe-north1", "us-east-1", "us-central1"):
            key = semconv.request_region_gco2e(region)
            if key in root:
                assert float(cells[f"{region} g"]) == pytest.approx(root[key], rel=PRINTED)
            else:
                assert cells[f"{region} g"] == "-"
    # the totals row is the sum of the phase spans' own attributes
    priced = [a for _, a in spans_of(fleet) if semconv.CARBON_QUALITY in a]
    total = rows["TOTAL (3)"]
    assert float(total[-1]) == pytest.approx(sum(a[semconv.CARBON_TOTAL_GCO2E] for a in priced), rel=PRINTED)
    assert "HTML report: " + str(tmp_path / "out.html") in out
    assert (tmp_path / "out.html").read_text().startswith("<!DOCTYPE html>")


def test_disaggregated_request_is_split_by_phase_and_region(fleet):
    report = build_report(fleet.traces, fleet.metrics)
    first = next(r for r in report.requests if r.trace_id == fleet.trace_ids[0])
    assert first.route == "prefill@europe-north1>decode@us-east-1"
    assert set(first.by_region) == {"europe-north1", "us-east-1"}
    assert first.by_region["europe-north1"].total_g == pytest.approx(first.by_phase[semconv.PHASE_PREFILL].total_g)
    prefill = next(s for s in first.spans if s.phase == semconv.PHASE_PREFILL)
    assert (prefill.gpu_model, prefill.gpu_count) == ("H100 SXM", 4)
    # 4 H100s at 350 W each, the only work on them during the 0.5 s prefill
    assert prefill.energy_j == pytest.approx(4 * 350.0 * 0.5, rel=1e-6)
    assert [s.depth for s in first.spans][:2] == [0, 1] and first.spans[0].name == "POST /v1/completions"
    assert {b.key for b in report.gpu_models} == {"H100 SXM", "A100 SXM", "L40S"}


def test_region_counterfactual_is_energy_times_pue_times_that_regions_intensity(fleet):
    report = build_report(fleet.traces, fleet.metrics)
    assert report.counterfactual_regions == ("europe-north1", "us-central1", "us-east-1")
    pue, pue_source = FacilityTables.default().pue("aws", "us-east-1")
    reading = StaticTableProvider().intensity(GridLocation("aws", "us-east-1", None), 0)
    for request in report.requests:
        priced = [s for s in request.spans if s.priced]
        expected = sum(s.energy_j * pue / 3.6e6 * reading.gco2e_per_kwh + s.embodied_g for s in priced)
        assert request.region_counterfactuals["us-east-1"].total_g == pytest.approx(expected, rel=1e-12)
        # the join wrote europe-north1's: the report takes the span attributes as they are
        from_join = request.region_counterfactuals["europe-north1"]
        assert from_join.total_g == pytest.approx(sum(s.counterfactual_g["europe-north1"] for s in priced))
        assert from_join.basis == "span attributes"
    (east,) = [p for p in report.region_pricing if p.region == "us-east-1"]
    assert (east.pue, east.pue_source, east.intensity, east.intensity_source) == (
        pue, pue_source, reading.gco2e_per_kwh, reading.source)
    aggregated = next(r for r in report.requests if r.trace_id == fleet.trace_ids[2])
    # priced in the region it ran in, it costs what it cost
    assert aggregated.region_counterfactuals["us-central1"].total_g == pytest.approx(aggregated.total_g)


def test_computed_region_counterfactual_agrees_with_the_joins_attribute(fleet):
    """Strip the join's carbon.counterfactual.* attributes: the report's own pricing gives the same."""
    stripped = []
    for rs in fleet.traces:
        copy = type(rs)()
        copy.CopyFrom(rs)
        for ss in copy.scope_spans:
            for span in ss.spans:
                keep = [kv for kv in span.attributes if not kv.key.startswith(semconv.CARBON_COUNTERFACTUAL_PREFIX)]
                del span.attributes[:]
                span.attributes.extend(keep)
        stripped.append(copy)
    with_attrs = build_report(fleet.traces, fleet.metrics, counterfactual_regions=JOIN_COUNTERFACTUALS)
    computed = build_report(stripped, fleet.metrics, counterfactual_regions=JOIN_COUNTERFACTUALS)
    for a, b in zip(with_attrs.requests, computed.requests, strict=True):
        assert b.region_counterfactuals["europe-north1"].basis != a.region_counterfactuals["europe-north1"].basis
        assert b.region_counterfactuals["europe-north1"].total_g == pytest.approx(
            a.region_counterfactuals["europe-north1"].total_g, rel=1e-9)


def test_gpu_counterfactual_uses_measured_joules_per_token(fleet):
    report = build_report(fleet.traces, fleet.metrics)
    assert report.counterfactual_gpus == ("A100 SXM", "H100 SXM", "L40S")
    l40s = report.gpu_joules_per_token["L40S"]
    first = next(r for r in report.requests if r.trace_id == fleet.trace_ids[0])
    expected = sum(s.tokens * l40s[s.phase] * s.pue / 3.6e6 * s.intensity
                   for s in first.spans if s.priced and s.phase in semconv.COMPUTE_PHASES)
    assert first.gpu_counterfactuals["L40S"].total_g == pytest.approx(expected, rel=1e-9)  # no embodied row for L40S
    # the A100 only decoded: there is no measured prefill figure to price a prefill with
    assert first.gpu_counterfactuals["A100 SXM"].total_g is None
    assert "prefill" in first.gpu_counterfactuals["A100 SXM"].basis
    aggregated = next(r for r in report.requests if r.trace_id == fleet.trace_ids[2])
    assert aggregated.gpu_counterfactuals["L40S"].total_g == pytest.approx(aggregated.total_g)


def test_idle_and_attributed_energy_come_from_the_gpu_counters(fleet):
    report = build_report(fleet.traces, fleet.metrics)
    rows = {g.gpu_id: g for g in report.gpu_energy}
    assert set(rows) == {"h100-0", "h100-1", "h100-2", "h100-3", "a100-0", "l40s-0"}
    h100 = rows["h100-0"]
    assert (h100.model, h100.region) == ("H100 SXM", "europe-north1")
    assert h100.attributed_j + h100.idle_j == pytest.approx(h100.measured_j, rel=1e-6)
    assert h100.attributed_j == pytest.approx(2 * 350.0 * 0.5, rel=1e-6)  # two prefills of 0.5 s
    without = build_report(fleet.traces, fleet.metrics[:-1])  # the last one is the join's ledger
    assert without.gpu_energy == () and without.gpu_energy_note == NO_GPU_COUNTERS
    assert NO_GPU_COUNTERS in render_table(without)


def test_bad_lines_are_reported_with_their_number_and_skipped(fleet, tmp_path, capsys):
    bad = ("{not json", '{"resourceLogs": []}',
           '{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "not-hex", "name": "x"}]}]}]}')
    good = load_file(write_otlp_lines(fleet, tmp_path / "good.jsonl"))
    path = write_otlp_lines(fleet, tmp_path / "bad.jsonl", extra_lines=bad)
    data = load_file(path)
    assert [b.line for b in data.bad_lines] == [2, 3, 4]
    assert "not JSON" in data.bad_lines[0].reason and "resourceSpans" in data.bad_lines[1].reason
    assert "not hex" in data.bad_lines[2].reason
    assert (len(data.traces), len(data.metrics)) == (len(good.traces), len(good.metrics))
    assert data.lines_read == good.lines_read + 3
    assert len(report_file(path).requests) == 3

    assert main(["report", str(path), "--html", str(tmp_path / "bad.html")]) == 0
    captured = capsys.readouterr()
    assert f"{path}:2: skipped: not JSON" in captured.err
    assert "3 line(s) of" in captured.out and "line 4:" in captured.out
    assert "line 3: not an OTLP export request" in (tmp_path / "bad.html").read_text()


def test_missing_and_empty_files_get_a_clear_error(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nothing.jsonl")]) == 2
    assert f"{tmp_path / 'nothing.jsonl'}: no such file" in capsys.readouterr().err
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    assert main(["report", str(empty)]) == 1
    assert "no OTLP traces in it" in capsys.readouterr().err
    assert not (tmp_path / "empty.html").exists()


def test_top_limits_the_table_to_the_heaviest_requests(fleet, otlp_file, tmp_path, capsys):
    assert main(["report", str(otlp_file), "--top", "1", "--html", str(tmp_path / "top.html")]) == 0
    _, rows = table_rows(capsys.readouterr().out, "Requests")
    report = build_report(fleet.traces, fleet.metrics)
    heaviest = max(report.requests, key=lambda r: r.total_g)
    assert set(rows) == {heaviest.trace_id[:12], "TOTAL (3)"}
    assert float(rows["TOTAL (3)"][-1]) == pytest.approx(report.total_g, rel=PRINTED)  # totals stay over all


def test_explicit_counterfactual_regions_and_a_bad_one(fleet, otlp_file, tmp_path, capsys):
    assert main(["report", str(otlp_file), "--region", "azure/westeurope", "--html", str(tmp_path / "r.html")]) == 0
    out = capsys.readouterr().out
    assert "in westeurope g" in out and "in us-east-1 g" not in out
    assert main(["report", str(otlp_file), "--region", "westeurope"]) == 2
    assert "expected PROVIDER/REGION" in capsys.readouterr().err


def test_build_report_leaves_its_input_unchanged(fleet):
    before = [rs.SerializeToString(deterministic=True) for rs in fleet.traces]
    build_report(fleet.traces, fleet.metrics)
    assert [rs.SerializeToString(deterministic=True) for rs in fleet.traces] == before


def test_traces_without_request_phases_are_counted_not_listed(fleet):
    """vLLM sends its own start-up trace ("Overall Loading") to the same endpoint: it is no request."""
    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span

    loading = ResourceSpans()
    loading.scope_spans.add().spans.append(Span(trace_id=b"\x07" * 16, span_id=b"\x07" * 8, name="Overall Loading",
                                                start_time_unix_nano=1, end_time_unix_nano=2))
    plain = build_report(fleet.traces, fleet.metrics)
    report = build_report([*fleet.traces, loading], fleet.metrics)
    assert len(report.requests) == len(plain.requests) and report.other_traces == 1
    assert "07" * 16 not in {r.trace_id for r in report.requests}
    assert "1 traces without request phases left out." in render_table(report)
