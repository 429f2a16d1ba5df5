"""Check a collector config file without starting anything: the YAML, every key and value, the
component ids the pipelines name, ${env:...} references as the current environment resolves them.

Prints OK, or the first error as FILE:LINE: dotted.key: what is wrong, and exits 1.

example:
  carbonspan validate --config otel-config.yaml
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="otel-config.yaml", metavar="FILE",
                        help="collector config file to check (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    import sys

    from carbonspan.collector.config import load_config
    from carbonspan.collector.errors import ConfigError

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    pipelines = ", ".join(f"{p.id} ({' -> '.join((*p.receivers, *p.processors, *p.exporters))})"
                          for p in config.pipelines.values())
    print(f"OK: {args.config}: {pipelines}")
    return 0
