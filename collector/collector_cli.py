"""Run the carbonspan collector: OTLP in (gRPC and HTTP), the carbon join and the request roll-up,
OTLP / file / Prometheus / debug out, as the config file says.

The config uses the OpenTelemetry Collector's schema (receivers, processors, exporters,
extensions, service.pipelines) with ${env:NAME} and ${env:NAME:-default} substitution; see
otel-config.yaml for the single-machine default and examples/ for agent and gateway modes.
SIGTERM or SIGINT shuts down gracefully: receivers stop, every span still waiting in the
processors is released (flagged with the quality of what was known) and exporters drain.

examples:
  carbonspan collector --config otel-config.yaml
  CARBONSPAN_OTLP_ENDPOINT=tempo:4317 carbonspan collector --config examples/agent.yaml
"""

from __future__ import annotations

import argparse
import gc

#: allocations between two young-generation collections (CPython's default: 700). The collector
#: allocates a few protobuf wrappers and tuples per span, almost none of them in reference cycles,
#: so at the default the cyclic collector runs thousands of times a second for nothing: 10-20 %
#: of the CPU at 10k spans/s (bench/PERF.md). Cycles are still collected, just in larger batches.
GC_YOUNG_THRESHOLD = 50_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="otel-config.yaml", metavar="FILE",
                        help="collector config file (default: %(default)s)")
    parser.add_argument("--shutdown-timeout", type=float, default=30.0, metavar="SECONDS",
                        help="time to flush held spans and drain exporters on shutdown (default: %(default)s)")


def tune_gc() -> None:
    """What exists once the service has started (modules, config, tables) lives as long as the
    process: ``freeze`` takes it out of every later collection, which then scans only the data
    in flight."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


def run(args: argparse.Namespace) -> int:
    import logging
    import signal
    import sys
    import threading

    from carbonspan.collector.config import load_config
    from carbonspan.collector.errors import ConfigError
    from carbonspan.collector.service import Service, configure_logging

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"carbonspan collector: invalid config: {exc}", file=sys.stderr)
        return 1
    configure_logging(config.telemetry.log_level)
    log = logging.getLogger("carbonspan.collector")
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        log.info("shutting down", extra={"signal": signal.Signals(signum).name})
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    service = Service(config)
    try:
        service.start()
    except OSError as exc:
        log.error("cannot start", extra={"error": str(exc)})
        service.shutdown(args.shutdown_timeout)
        return 1
    tune_gc()
    while not stop.wait(1.0):
        pass
    service.shutdown(args.shutdown_timeout)
    return 0
