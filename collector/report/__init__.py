"""``carbonspan report``: per-request energy and CO2e, breakdowns and counterfactuals from the
collector's OTLP output, as a plain-text table and a self-contained HTML page.

The demo and the CLI both use this API::

    data = load_file("traces.jsonl")                    # OTLP/JSON lines, bad lines counted
    report = build_report(data.traces, data.metrics)    # pure: no I/O
    print(render_table(report, top=20))
    write_html(report, "report.html")

or ``report_file(path)`` for the first two steps, with the skipped lines kept on the report.
Names are imported on first use, so that ``carbonspan --help`` does not load protobuf.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "BadLine": "load",
    "ReportInput": "load",
    "load_file": "load",
    "build_report": "build",
    "Report": "model",
    "render_table": "table",
    "render_html": "html",
    "write_html": "html",
    "report_file": "command",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
