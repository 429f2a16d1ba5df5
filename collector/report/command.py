"""Per-request energy and gCO2e from an OTLP/JSON file the collector's file exporter wrote.

Prints a table (energy, gCO2e by phase and region, quality; per region, per GPU model, idle vs
attributed energy, counterfactuals) and writes the same as a self-contained HTML page.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from carbonspan.collector.report.model import Report

#: bad lines named one by one on stderr; the rest are counted.
_BAD_LINES_SHOWN = 10


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, help="OTLP/JSON lines, as the collector's file exporter writes them")
    parser.add_argument("--html", type=Path, metavar="OUT",
                        help="where to write the HTML report (default: FILE with the suffix .html)")
    parser.add_argument("--top", type=int, default=20, metavar="N",
                        help="show the N heaviest requests in the table and as waterfalls (default: 20; 0: all)")
    parser.add_argument("--region", action="append", default=None, metavar="PROVIDER/REGION",
                        help="price every request in this region too (repeatable; default: every region in FILE)")


def report_file(path: str | Path, **options: Any) -> Report:
    """load_file + build_report, the skipped lines and the file name kept on the report.
    ``options`` go to build_report. Raises OSError when the file cannot be read."""
    from carbonspan.collector.report.build import build_report
    from carbonspan.collector.report.load import load_file

    data = load_file(path)
    report = build_report(data.traces, data.metrics, **options)
    return dataclasses.replace(report, bad_lines=tuple(data.bad_lines), source=str(path))


def default_html_path(source: Path) -> Path:
    out = source.with_suffix(".html")
    return out if out != source else source.with_name(source.name + ".report.html")


def _regions(values: list[str] | None) -> list[tuple[str, str]] | None:
    if values is None:
        return None
    pairs = []
    for value in values:
        provider, _, region = value.partition("/")
        if not provider or not region:
            raise ValueError(f"--region {value!r}: expected PROVIDER/REGION, e.g. aws/us-east-1")
        pairs.append((provider, region))
    return pairs


def run(args: argparse.Namespace) -> int:
    from carbonspan.collector.report.html import write_html
    from carbonspan.collector.report.table import render_table

    source: Path = args.file
    if args.top < 0:
        print("carbonspan report: --top must be 0 (all) or more", file=sys.stderr)
        return 2
    try:
        regions = _regions(args.region)
        report = report_file(source, counterfactual_regions=regions)
    except (OSError, ValueError) as exc:
        reason = "no such file" if isinstance(exc, FileNotFoundError) else str(exc)
        print(f"carbonspan report: {source}: {reason}", file=sys.stderr)
        return 2
    for bad in report.bad_lines[:_BAD_LINES_SHOWN]:
        print(f"{source}:{bad.line}: skipped: {bad.reason}", file=sys.stderr)
    if len(report.bad_lines) > _BAD_LINES_SHOWN:
        print(f"{source}: {len(report.bad_lines) - _BAD_LINES_SHOWN} more bad lines skipped", file=sys.stderr)
    if not report.requests and not report.gpu_energy:
        print(f"carbonspan report: {source}: no OTLP traces in it"
              f"{f' ({len(report.bad_lines)} unreadable lines)' if report.bad_lines else ''}; "
              "point the collector's file exporter at it and send some requests", file=sys.stderr)
        return 1
    top = args.top or None
    print(render_table(report, top))
    out = write_html(report, args.html or default_html_path(source), top)
    print(f"\nHTML report: {out}")
    return 0
