"""Sample this node's GPUs and send their energy (hw.energy, J) and power (hw.power, W) as OTLP
metrics, every sample with its own timestamp, batched.

GPUs are found through NVML (NVIDIA), then AMD SMI; --simulate replaces them with simulated
GPUs of named models (e.g. --simulate "H100 SXM x4"). The OTLP endpoint, protocol, headers and
TLS come from OTEL_EXPORTER_OTLP_* as for any OpenTelemetry SDK; the resource from
OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME, which the --region/--provider/... flags override.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading


def _seconds(text: str, allow_zero: bool = False) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if value < 0 or (value == 0 and not allow_zero):
        raise argparse.ArgumentTypeError(f"expected {'0 or more' if allow_zero else 'more than 0'} seconds, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from carbonspan.instrumentation.power.sampler import DEFAULT_ENERGY_POLL_S, VERIFY_EVERY_TICKS

    parser.add_argument("--interval", type=_seconds, default=0.1, help="seconds between samples (default 0.1)")
    parser.add_argument("--energy-poll", type=lambda text: _seconds(text, allow_zero=True),
                        default=DEFAULT_ENERGY_POLL_S, metavar="SECONDS",
                        help=f"between samples, read the energy counters every this many seconds to place each "
                             f"counter update in time, until the place of a counter's updates is learned (then "
                             f"one interval every {VERIFY_EVERY_TICKS} samples); default {DEFAULT_ENERGY_POLL_S}; "
                             f"0: read them at the samples only, which stamps energy up to one counter period "
                             f"late (docs/sampler.md)")
    parser.add_argument("--export-interval", type=_seconds, default=1.0, help="seconds between exports (default 1)")
    parser.add_argument("--simulate", metavar="MODEL[xN]",
                        help="simulated GPUs, e.g. 'H100 SXM x4' or 'A100 SXM x2,L4'")
    parser.add_argument("--utilization", type=float, default=0.5,
                        help="with --simulate: the simulated GPUs' constant utilisation, 0..1 (default 0.5)")
    parser.add_argument("--region", help="cloud.region of this node")
    parser.add_argument("--provider", help="cloud.provider of this node (aws, gcp, azure ...)")
    parser.add_argument("--service-name", help="service.name (default: OTEL_SERVICE_NAME, else carbonspan-sampler)")
    parser.add_argument("--host-name", help="host.name (default: this machine's host name)")
    parser.add_argument("--instance-id", help="service.instance.id")
    parser.add_argument("--endpoint", help="OTLP endpoint (default: OTEL_EXPORTER_OTLP_[METRICS_]ENDPOINT)")
    parser.add_argument("--protocol", choices=("grpc", "http/protobuf"),
                        help="OTLP protocol (default: OTEL_EXPORTER_OTLP_[METRICS_]PROTOCOL, else http/protobuf)")
    parser.add_argument("--console", action="store_true", help="print the OTLP requests as JSON lines instead")
    parser.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (default: run)")


def run(args: argparse.Namespace) -> int:
    from carbonspan.instrumentation.otlp_push import ConsoleMetricsSender, OtlpMetricsSender
    from carbonspan.instrumentation.power.sampler import DEFAULT_PROTOCOL, detect_source, start_sampler_thread
    from carbonspan.instrumentation.power.simulated import SimulatedPowerSource
    from carbonspan.instrumentation.power.source import SourceError
    from carbonspan.processors import semconv

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.simulate:
            source = SimulatedPowerSource.from_spec(args.simulate)
            for gpu in source.simulated:
                gpu.set_utilization(args.utilization)
        else:
            source = detect_source()
        if args.console:
            sender = ConsoleMetricsSender(sys.stdout)
        else:
            sender = OtlpMetricsSender.from_env(args.endpoint, args.protocol, default_protocol=DEFAULT_PROTOCOL)
    except (SourceError, ValueError) as error:
        print(f"carbonspan sampler: {error}", file=sys.stderr)
        return 2
    resource = {
        semconv.CLOUD_REGION: args.region,
        semconv.CLOUD_PROVIDER: args.provider,
        semconv.SERVICE_NAME: args.service_name,
        semconv.HOST_NAME: args.host_name,
        semconv.SERVICE_INSTANCE_ID: args.instance_id,
    }
    running = start_sampler_thread(
        source, interval_s=args.interval, export_interval_s=args.export_interval, sender=sender, resource=resource,
        energy_poll_s=args.energy_poll or None,
    )
    for gpu in running.sampler.gpus:
        print(f"sampling GPU {gpu.index}: {gpu.model} {gpu.uuid}", file=sys.stderr)
    target = "stdout" if args.console else f"{sender.endpoint} ({sender.protocol})"
    polls = (f"energy counters polled every {running.sampler.poll_ns / 1e9:g} s between samples"
             if running.sampler.polls_per_tick > 1 else "energy counters read at the samples only")
    print(f"every {args.interval} s ({polls}), sent every {args.export_interval} s to {target}", file=sys.stderr)

    done = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: done.set())
    done.wait(args.duration or None)
    running.stop()
    batcher = running.batcher
    print(
        f"sent {batcher.sent_points} points, dropped {batcher.dropped_points}, "
        f"{batcher.buffered_points} unsent, {running.sampler.missed_ticks} ticks missed",
        file=sys.stderr,
    )
    return 0
