"""``carbonspan demo`` end to end: the real collector with its packaged default config, the simulated
fleet over real OTLP/gRPC, the file exporter's output and the report made from it."""

from __future__ import annotations

import json
import re
from pathlib import Path

from carbonspan.collector.cli import main
from carbonspan.collector.config import load_config_text
from carbonspan.collector.demo.config import default_config_path
from carbonspan.collector.service import Service
from carbonspan.processors import semconv

REGIONS = ("us-east-1", "europe-north1", "ap-south-1")
ROOT = Path(__file__).resolve().parents[2]


def _value(any_value: dict):
    for kind in ("doubleValue", "intValue", "stringValue", "boolValue"):
        if kind in any_value:
            return int(any_value[kind]) if kind == "intValue" else any_value[kind]
    return None


def _spans(path: Path) -> list[tuple[dict, dict]]:
    """(resource attributes, span) for every span in an OTLP/JSON lines file; span["attrs"] is a dict."""
    out = []
    for line in path.read_text().splitlines():
        for rs in json.loads(line).get("resourceSpans", []):
            resource = {a["key"]: _value(a["value"]) for a in rs["resource"].get("attributes", [])}
            for ss in rs.get("scopeSpans", []):
                for span in ss.get("spans", []):
                    span["attrs"] = {a["key"]: _value(a["value"]) for a in span.get("attributes", [])}
                    out.append((resource, span))
    return out


def _request_rows(table: str) -> dict[str, dict[str, str]]:
    """The per-request table's rows by short trace id, cells by column header."""
    lines = table.splitlines()
    start = lines.index("Requests") + 1
    header = re.split(r"\s{2,}", lines[start].strip())
    rows = {}
    for line in lines[start + 2:]:
        if not line.strip() or line.startswith("-"):
            break
        cells = line.split()
        assert len(cells) == len(header), line
        rows[cells[0]] = dict(zip(header, cells, strict=True))
    return rows


def test_demo_prices_every_request_of_the_simulated_fleet(tmp_path: Path, capsys) -> None:
    out = tmp_path / "demo"
    argv = ["--simulate", "--requests", "30", "--speed", "0", "--seed", "3", "--top", "0", "--out", str(out)]
    assert main(["demo", *argv]) == 0
    printed = capsys.readouterr()
    traces_file = out / "file-traces.jsonl"
    html = out / "report.html"
    assert f"HTML report: {html}" in printed.out and str(traces_file) in printed.out
    assert "requests finished" in printed.err  # the progress bar

    spans = _spans(traces_file)
    roots = {s["traceId"]: s for _, s in spans if semconv.CARBON_REQUEST_TOTAL_GCO2E in s["attrs"]}
    rows = _request_rows(printed.out)
    assert len(roots) == len(rows) >= 30
    routes = " ".join(row["route"] for row in rows.values())
    assert all(f"@{region}" in routes for region in REGIONS)
    for trace_id, root in roots.items():
        row = rows[trace_id[:12]]
        assert row["total g"] == f"{root['attrs'][semconv.CARBON_REQUEST_TOTAL_GCO2E]:.4g}"
        assert row["energy J"] == f"{root['attrs'][semconv.CARBON_REQUEST_ENERGY_JOULES]:.4g}"

    priced = [(r, s) for r, s in spans if semconv.CARBON_QUALITY in s["attrs"]]
    assert {r["cloud.region"] for r, _ in priced} == set(REGIONS)
    measured = sum(s["attrs"][semconv.CARBON_QUALITY] == semconv.QUALITY_MEASURED for _, s in priced)
    assert measured >= 0.9 * len(priced)
    for _, span in priced:
        assert all(semconv.counterfactual_attribute(region) in span["attrs"] for region in REGIONS)
    page = html.read_text()
    assert all(trace_id[:12] in page for trace_id in roots)


def test_the_default_config_is_packaged_once() -> None:
    """The demo and ``carbonspan collector`` read one file: the package's, which the repository's
    otel-config.yaml links to (so that a non-editable install has it too)."""
    packaged = default_config_path()
    assert packaged.is_file() and packaged.parent.name == "collector"
    assert (ROOT / "otel-config.yaml").resolve() == packaged.resolve()


def test_export_sends_the_enriched_spans_to_an_otlp_peer(tmp_path: Path, capsys) -> None:
    """The peer is another carbonspan collector: an OTLP/gRPC receiver writing what it gets to a file."""
    received = tmp_path / "peer.jsonl"
    peer = Service(load_config_text(
        "receivers: {otlp: {protocols: {grpc: {endpoint: '127.0.0.1:0'}}}}\n"
        f"exporters: {{file: {{path: '{received}'}}}}\n"
        "service: {pipelines: {traces: {receivers: [otlp], exporters: [file]}}, telemetry: {metrics: {level: none}}}\n",
        environ={}))
    peer.start()
    try:
        address = peer.addresses()["otlp/grpc"]
        argv = ["demo", "--simulate", "--requests", "5", "--speed", "0", "--out", str(tmp_path / "demo"), "--export", f"otlp://{address}"]
        assert main(argv) == 0
    finally:
        peer.shutdown(5.0)
    ours = _spans(tmp_path / "demo" / "file-traces.jsonl")
    theirs = _spans(received)
    assert sorted(s["spanId"] for _, s in theirs) == sorted(s["spanId"] for _, s in ours)
    assert sum(semconv.CARBON_TOTAL_GCO2E in s["attrs"] for _, s in theirs) > 0
    assert f"{len(ours)} enriched spans sent to {address}" in capsys.readouterr().err
