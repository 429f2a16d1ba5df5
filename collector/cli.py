"""``carbonspan``: one command, several jobs. Each job lives in its own module, imported only when
it runs, so ``carbonspan --help`` stays fast and a job's heavy dependencies load only for it."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

#: command -> (module, one-line help). The module has ``add_arguments(parser)`` and ``run(args) -> int``,
#: and imports what it needs to run inside ``run``.
COMMANDS: dict[str, tuple[str, str]] = {
    "collector": ("carbonspan.collector.collector_cli", "run the collector service"),
    "validate": ("carbonspan.collector.validate_cli", "check a collector config file and say where it is wrong"),
    "sampler": ("carbonspan.instrumentation.power.cli", "sample GPU energy and power, send them as OTLP metrics"),
    "report": ("carbonspan.collector.report.command", "per-request CO2 table and HTML report from an OTLP file"),
    "demo": ("carbonspan.collector.demo.command", "vLLM CPU engines or a simulated fleet -> CO2 table + HTML"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="carbonspan",
        description="Measured carbon footprint on every LLM request, as OpenTelemetry data.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command, (module_name, summary) in COMMANDS.items():
        module = importlib.import_module(module_name)
        command_parser = sub.add_parser(
            command, help=summary, description=(module.__doc__ or summary).strip(),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(command_parser)
        command_parser.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args._module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
