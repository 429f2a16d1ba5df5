"""Carbon on LLM traces in a minute, with no GPU and no other service.

Starts the carbonspan collector in this process with its default config (otel-config.yaml; ports
chosen by the system, output into --out) and a fleet sending it OTLP/gRPC: prefill on 4x H100 in
aws/us-east-1, decode on 2x A100 in gcp/europe-north1, an aggregated L40S node in aws/ap-south-1.
When vLLM is installed, the fleet is three real vLLM engines on CPU (a tiny model with dummy
weights: a prefill + decode pair joined by a KV connector behind a disaggregation proxy, and an
aggregated engine), sent --requests chat completions (default 12); their spans, KV transfers and
load counters are real, while the GPUs' energy is simulated (a CPU has none to measure), following
the requests in flight, and read by the real sampler at 10 Hz. Otherwise, or with --simulate, a
workload model sends the same span shapes, energy and counters. Then the collector is shut down so
that every span is flushed, and the per-request table (energy, gCO2e by phase and region, quality)
is printed and the HTML report written.

examples:
  carbonspan demo
  carbonspan demo --simulate --requests 200
  carbonspan demo --requests 50 --top 10 --out /tmp/demo
  carbonspan demo --export otlp://127.0.0.1:4317     # enriched spans on to Jaeger / Tempo too
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from carbonspan.collector.demo.config import DemoConfig
    from carbonspan.collector.service import Service

#: simulated seconds of arrivals by default: ~600 requests at the workload's 3 per second.
DEFAULT_DURATION_S = 200.0
DEFAULT_SPEED = 8.0
SHUTDOWN_TIMEOUT_S = 10.0
VLLM_MISSING = ("--vllm needs vLLM for CPU, and `import vllm` fails here (install it as docs/vllm.md says); "
                "run with --simulate for the workload model")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                        help=f"simulated seconds of request arrivals (default: {DEFAULT_DURATION_S:g}, "
                             "or until --requests when that is given; vLLM engines: wall-clock seconds)")
    parser.add_argument("--requests", type=int, default=None, metavar="N",
                        help="stop arrivals after N requests (vLLM engines: send N, default 12)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the workload (default: %(default)s)")
    parser.add_argument("--speed", type=float, default=DEFAULT_SPEED, metavar="X",
                        help="simulated seconds per wall-clock second (default: %(default)s; 0: as fast as "
                             "this machine goes)")
    parser.add_argument("--out", type=Path, default=Path("carbonspan-demo"), metavar="DIR",
                        help="where the spans (OTLP/JSON) and the HTML report go (default: ./%(default)s)")
    parser.add_argument("--top", type=int, default=20, metavar="N",
                        help="the N heaviest requests in the table and as waterfalls (default: %(default)s; 0: all)")
    parser.add_argument("--export", metavar="otlp://HOST:PORT",
                        help="also send the enriched spans over OTLP/gRPC (plaintext) to Jaeger, Tempo or a collector")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--vllm", action="store_true",
                      help="require real vLLM engines on CPU (the default when vLLM is installed); fail without")
    mode.add_argument("--simulate", action="store_true",
                      help="the workload model instead of vLLM engines, even when vLLM is installed")


def export_endpoint(value: str) -> str:
    """``otlp://host:port`` (or ``host:port``) -> ``host:port``."""
    scheme, sep, rest = value.rpartition("://")
    if sep and scheme not in ("otlp", "grpc", "http"):
        raise ValueError(f"--export {value!r}: expected otlp://HOST:PORT")
    host, colon, port = rest.rpartition(":")
    if not colon or not host or not port.isdigit():
        raise ValueError(f"--export {value!r}: expected otlp://HOST:PORT")
    return rest


def _check(args: argparse.Namespace) -> str | None:
    if args.duration is not None and args.duration <= 0:
        return "--duration must be more than 0"
    if args.requests is not None and args.requests <= 0:
        return "--requests must be more than 0"
    if args.speed < 0 or args.top < 0:
        return "--speed and --top must be 0 or more"
    return None


def run(args: argparse.Namespace) -> int:
    from carbonspan.collector.demo.config import demo_config
    from carbonspan.collector.demo.engines import EngineError, vllm_importable
    from carbonspan.collector.errors import ConfigError
    from carbonspan.collector.service import Service, configure_logging
    from carbonspan.instrumentation.simulation import default_fleet

    problem = _check(args)
    try:
        export = None if args.export is None else export_endpoint(args.export)
    except ValueError as exc:
        problem = str(exc)
    engines = not problem and not args.simulate and vllm_importable()  # imported only when it may be used
    if not problem and args.vllm and not engines:
        problem = VLLM_MISSING
    if problem:
        print(f"carbonspan demo: {problem}", file=sys.stderr)
        return 2
    fleet = default_fleet()
    regions = list(dict.fromkeys(f"{node.provider}/{node.region}" for node in fleet.nodes))
    out: Path = args.out
    try:
        out.mkdir(parents=True, exist_ok=True)
        demo = demo_config(out, regions, export)
        demo.traces_file.unlink(missing_ok=True)  # the file exporter appends: one run per report
    except (OSError, ConfigError) as exc:
        print(f"carbonspan demo: {exc}", file=sys.stderr)
        return 1
    configure_logging(demo.collector.telemetry.log_level)
    service = Service(demo.collector)
    try:
        service.start()
    except OSError as exc:
        service.shutdown(1.0)
        print(f"carbonspan demo: cannot start the collector: {exc}", file=sys.stderr)
        return 1
    try:
        grpc_address = next(a for name, a in service.addresses().items() if name.endswith("/grpc"))
        print(f"collector running ({demo.collector.source}); OTLP/gRPC on {grpc_address}", file=sys.stderr)
        if export is not None:
            print(f"enriched spans also go to {export} (OTLP/gRPC, plaintext); if nothing listens there the "
                  "exporter queues and retries, and the demo goes on", file=sys.stderr)
        finished = _drive_engines(fleet, grpc_address, args) if engines else _drive(fleet, grpc_address, args)
    except EngineError as exc:  # the engines are stopped by now; the collector is in the finally
        print(f"carbonspan demo: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ncarbonspan demo: interrupted", file=sys.stderr)
        return 130
    finally:
        print(f"shutting the collector down (flushing every span it holds, up to {SHUTDOWN_TIMEOUT_S:g} s)",
              file=sys.stderr)
        service.shutdown(SHUTDOWN_TIMEOUT_S)
    _say_export(service, export)
    return _report(demo, regions, args.top, finished)


def _drive(fleet, grpc_address: str, args: argparse.Namespace) -> int:
    from carbonspan.collector.demo.progress import Progress
    from carbonspan.instrumentation.simulation import OtlpGrpcSink, Replay, ReplaySettings, WorkloadSpec

    duration = args.duration if args.duration is not None or args.requests is not None else DEFAULT_DURATION_S
    workload = WorkloadSpec()
    replay = Replay(fleet, workload, ReplaySettings(duration_s=duration, requests=args.requests, seed=args.seed))
    by_duration = round(duration * workload.rate_per_s) if duration else None
    target = min(n for n in (args.requests, by_duration) if n)
    progress = Progress(target, approximate=target != args.requests)
    sink = OtlpGrpcSink(grpc_address)
    done = 0

    def send(batch) -> None:
        nonlocal done
        sink(batch)
        done += len(batch.finished)
        progress.update(done, f"simulated {(batch.time_ns - replay.start_ns) / 1e9:.0f} s")

    try:
        replay.run(send, speed=args.speed or None)
    finally:
        sink.close()
    progress.update(done, "done", final=True)
    return done


def _drive_engines(fleet, grpc_address: str, args: argparse.Namespace) -> int:
    from carbonspan.collector.demo.engines import DEFAULT_REQUESTS, drive_engines

    return drive_engines(fleet, grpc_address, args.requests or DEFAULT_REQUESTS, args.duration, args.seed, args.out,
                         lambda line: print(line, file=sys.stderr))


def _say_export(service: Service, export: str | None) -> None:
    from carbonspan.collector.demo.config import EXPORT_ID

    if export is None:
        return
    stats = service.exporters[EXPORT_ID].stats()
    sent, dropped = stats.get("sent_items", 0), stats.get("dropped_items", 0)
    if dropped:
        print(f"carbonspan demo: {export} did not take {dropped} enriched spans ({sent} sent); is Jaeger or "
              "Tempo listening there with OTLP/gRPC? The report below does not depend on it.", file=sys.stderr)
    else:
        print(f"{sent} enriched spans sent to {export}", file=sys.stderr)


def _report(demo: DemoConfig, regions: list[str], top: int, finished: int) -> int:
    from carbonspan.collector.intensity_config import facility_from_config, intensity_provider_from_config
    from carbonspan.collector.report import render_table, report_file, write_html

    carbon = next(c.settings for c in demo.collector.processors.values() if c.type == "carbon")
    report = report_file(demo.traces_file, counterfactual_regions=[tuple(r.split("/", 1)) for r in regions],
                         intensity=intensity_provider_from_config(carbon.intensity),
                         facility=facility_from_config(carbon.facility))
    if not report.requests:
        print(f"carbonspan demo: {finished} requests finished in the fleet but none reached "
              f"{demo.traces_file}; see the collector's log above", file=sys.stderr)
        return 1
    print(render_table(report, top or None))
    html = write_html(report, demo.traces_file.parent / "report.html", top or None)
    print(f"\nspans with their carbon attributes (OTLP/JSON): {demo.traces_file}\nHTML report: {html}")
    return 0
