"""The HTML report: escaped, self-contained, and rendered by headless Chromium with its script run."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from otlp_data import T0, SpanSpec, node_resource, spans
from report_data import build_fleet

from carbonspan.collector.report import build_report, render_html, write_html
from carbonspan.collector.report.table import number
from carbonspan.processors import semconv

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync")


@pytest.fixture(scope="module")
def report():
    fleet = build_fleet()
    return build_report(fleet.traces, fleet.metrics)


class Page(HTMLParser):
    """What a test needs from a page: attributes of every element, text of table rows and cells."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict]] = []
        self.rows: list[tuple[dict, list[str]]] = []  # (tr attributes, cell texts)
        self._cell: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.elements.append((tag, dict(attrs)))
        if tag == "tr":
            self.rows.append((dict(attrs), []))
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self.rows:
            self.rows[-1][1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def test_page_is_self_contained_and_escapes_input_text(tmp_path):
    hostile = "<script>alert(1)</script>"
    res = node_resource(["g0"], service=f'"{hostile}', region=f"<b>{hostile}</b>")
    traces = [spans(res, [SpanSpec(semconv.PHASE_PREFILL, T0, T0 + 10**9, tokens=5, name=hostile)])]
    text = write_html(build_report(traces, []), tmp_path / "hostile.html").read_text()
    assert hostile not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert text.count("<script>") == 1  # only the page's own
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", text)  # nothing fetched from anywhere
    assert "<link" not in text and "@import" not in text


def test_waterfall_bars_are_coloured_by_co2(report):
    page = Page(render_html(report))
    bars = [attrs["style"] for tag, attrs in page.elements if tag == "div" and attrs.get("class") == "bar"]
    assert len(bars) == sum(len(r.spans) for r in report.requests)
    colours = {re.search(r"background:([^;\"]+)", style).group(1) for style in bars}
    assert "hsl(0,70%,45%)" in colours  # the heaviest span is red
    assert len(colours) >= 3  # and the others are not all one colour


def chromium_dom(page: Path, profile: Path) -> str:
    """The page's DOM after Chromium loaded it and ran its script (--dump-dom)."""
    result = subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.mark.skipif(not Path(CHROMIUM).exists() and not os.environ.get("CI"),
                    reason="chromium not installed (scripts/test.sh installs it; in CI this test must run)")
def test_headless_chromium_renders_the_report(report, tmp_path):
    assert shutil.which(CHROMIUM), "chromium is missing: scripts/test.sh installs Debian's chromium"
    dom = chromium_dom(write_html(report, tmp_path / "report.html"), tmp_path / "profile")
    page = Page(dom)
    body = next(attrs for tag, attrs in page.elements if tag == "body")
    assert body.get("data-ready") == "1"  # the page's script ran to its end
    requests = [(attrs, cells) for attrs, cells in page.rows if attrs.get("class") == "request"]
    assert sorted(attrs["data-trace"] for attrs, _ in requests) == sorted(r.trace_id for r in report.requests)
    for attrs, cells in requests:
        request = next(r for r in report.requests if r.trace_id == attrs["data-trace"])
        assert cells[-1] == number(request.total_g) and cells[2] == request.route
    totals = [cells for attrs, cells in page.rows if attrs.get("class") == "total"]
    assert totals[0][0] == f"TOTAL ({len(report.requests)})" and totals[0][-1] == number(report.total_g)
    region_rows = [cells[0] for attrs, cells in page.rows if cells and cells[0] in report.region_names]
    assert set(region_rows) == {"europe-north1", "us-east-1", "us-central1"}
    waterfalls = [attrs["data-trace"] for tag, attrs in page.elements if attrs.get("class") == "waterfall"]
    assert len(waterfalls) == len(report.requests)
    assert any(cells and cells[0] == "h100-0" for _, cells in page.rows)  # idle vs attributed per GPU
    assert "in us-east-1 g" in dom and "on L40S g" in dom  # counterfactual columns
