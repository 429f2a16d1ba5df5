"""``carbonspan report``: per-request energy and CO2e, breakdowns and counterfactuals from the
collector's OTLP output, as a plain-text table and a self-contained HTML page.

The demo and the CLI both use this API::

    data = load_file("traces.jsonl")                    # OTLP/JSON lines, bad lines counted
    report = build_report(data.traces, data.metrics)    # pure: no I/O
    print(render_table(report, top=20))
    write_html(report, "report.html")
"""

from carbonspan.collector.report.build import build_report
from carbonspan.collector.report.load import BadLine, ReportInput, load_file
from carbonspan.collector.report.model import Report
from carbonspan.collector.report.table import render_table

__all__ = ["BadLine", "Report", "ReportInput", "build_report", "load_file", "render_table"]
