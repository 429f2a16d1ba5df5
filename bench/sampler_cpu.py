"""CPU cost of the GPU power sampler: 8 simulated GPUs sampled at 10 Hz, batched, sent every
second over real OTLP (HTTP/protobuf by default, ``--protocol grpc``) to a receiver on 127.0.0.1.
Prints each sampler process's CPU time as a percentage of one core; the goal is under 0.5 % with
the default settings.

    .venv/bin/python bench/sampler_cpu.py [--seconds 20] [--gpus 8] [--interval 0.1] [--protocol http/protobuf]
                                          [--energy-poll 0.05] [--export-interval 1]

One run measures two samplers side by side, each in its own process, over the same seconds (so
that they see the same machine load): the default settings (energy polls every
``DEFAULT_ENERGY_POLL_S`` between the ticks, see docs/sampler.md) and the same without the polls
(``--energy-poll`` picks another poll period for the first). The receiver runs in a third process,
so its CPU is not counted. Each figure is split by thread (from ``/proc/self/task/*/schedstat``):
the sampler thread, the batcher thread (builds and sends the requests) and the rest (the
transport's own threads: grpcio's, none for HTTP).

The simulated read is a few bisects and multiplications; a real NVML call is an ioctl into the
driver and costs more (tens of microseconds), so on a GPU node expect somewhat more.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import random
import resource
import threading
import time

from carbonspan.instrumentation.otlp_push import PROTOCOL_GRPC, PROTOCOLS
from carbonspan.instrumentation.power.sampler import DEFAULT_ENERGY_POLL_S, DEFAULT_PROTOCOL


class Counts:
    """What the receiver got (shared by its server threads)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests = self.points = 0

    def add(self, request) -> None:
        points = sum(len(m.sum.data_points) + len(m.gauge.data_points)
                     for rm in request.resource_metrics for sm in rm.scope_metrics for m in sm.metrics)
        with self.lock:
            self.requests += 1
            self.points += points


def receive(conn, protocol: str) -> None:
    """Child process: an OTLP metrics receiver on 127.0.0.1 that counts what it gets."""
    from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2

    counts = Counts()
    if protocol == PROTOCOL_GRPC:
        from concurrent import futures

        import grpc
        from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc

        class Service(metrics_service_pb2_grpc.MetricsServiceServicer):
            def Export(self, request, context):  # noqa: N802 - the gRPC method name
                counts.add(request)
                return metrics_service_pb2.ExportMetricsServiceResponse()

        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Service(), server)
        conn.send(f"http://127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}")
        server.start()
        conn.recv()  # told to stop
        server.stop(grace=1).wait()
    else:
        asyncio.run(serve_http(conn, counts))
    conn.send((counts.requests, counts.points))


async def serve_http(conn, counts: Counts) -> None:
    """OTLP/HTTP (POST /v1/metrics, protobuf both ways) with aiohttp, as the collector's receiver."""
    from aiohttp import web
    from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2

    async def export(request: web.Request) -> web.Response:
        message = metrics_service_pb2.ExportMetricsServiceRequest()
        message.ParseFromString(await request.read())
        counts.add(message)
        return web.Response(body=metrics_service_pb2.ExportMetricsServiceResponse().SerializeToString(),
                            content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/metrics", export)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    conn.send(f"http://127.0.0.1:{runner.addresses[0][1]}/v1/metrics")
    await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # told to stop
    await runner.cleanup()


def thread_cpu_s(native_id: int) -> float:
    """A thread's run time so far (ns resolution, unlike getrusage per thread)."""
    with open(f"/proc/self/task/{native_id}/schedstat") as f:
        return int(f.read().split()[0]) * 1e-9


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def sample(conn, endpoint: str, protocol: str, args: argparse.Namespace, energy_poll_s: float | None,
           start_at: float) -> None:
    """Child process: one sampler, measured from ``start_at`` (monotonic) for ``args.seconds``."""
    from carbonspan.instrumentation.otlp_push import OtlpMetricsSender
    from carbonspan.instrumentation.power.sampler import start_sampler_thread
    from carbonspan.instrumentation.power.simulated import SimulatedGpu, SimulatedPowerSource

    rng = random.Random(1)
    # Each GPU's counter updates every 100 ms at its own phase, as independent boards do.
    source = SimulatedPowerSource([SimulatedGpu("H100 SXM", counter_phase_ns=rng.randrange(100_000_000))
                                   for _ in range(args.gpus)])
    now = time.time_ns()
    for gpu in source.simulated:  # a load that changes every 200 ms, set up before measuring
        for k in range(int((start_at - time.monotonic() + args.seconds) * 5) + 10):
            gpu.set_utilization(rng.random(), at_ns=now + k * 200_000_000)

    sender = OtlpMetricsSender(endpoint, protocol)
    running = start_sampler_thread(source, interval_s=args.interval, export_interval_s=args.export_interval,
                                   sender=sender, resource={"service.name": "bench"}, energy_poll_s=energy_poll_s)
    threads = {"sampler thread": running.sampler._thread.native_id,  # noqa: SLF001 - measuring it
               "batcher thread": running.batcher._thread.native_id}  # noqa: SLF001
    time.sleep(max(0.0, start_at - time.monotonic()))  # past the one-off start (first connection ...)
    stats = running.sampler.stats.values()
    samples0, polls0 = sum(s.samples for s in stats), sum(s.polls for s in stats)
    by_thread0 = {name: thread_cpu_s(tid) for name, tid in threads.items()}
    cpu0, wall0 = cpu_s(), time.monotonic()
    time.sleep(args.seconds)
    cpu, wall = cpu_s() - cpu0, time.monotonic() - wall0
    by_thread = {name: thread_cpu_s(tid) - by_thread0[name] for name, tid in threads.items()}
    samples, polls = sum(s.samples for s in stats) - samples0, sum(s.polls for s in stats) - polls0
    running.stop()
    sender.close()
    by_thread["rest (transport threads, main)"] = cpu - sum(by_thread.values())
    conn.send(dict(cpu=cpu, wall=wall, samples=samples, polls=polls, by_thread=by_thread,
                   sent=running.batcher.sent_points, missed=running.sampler.missed_ticks))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument("--energy-poll", type=float, default=DEFAULT_ENERGY_POLL_S,
                        help=f"the first sampler's poll period (default {DEFAULT_ENERGY_POLL_S} s, the default)")
    parser.add_argument("--protocol", choices=PROTOCOLS, default=DEFAULT_PROTOCOL)
    parser.add_argument("--export-interval", type=float, default=1.0, help="seconds between exports (default 1)")
    args = parser.parse_args()

    ctx = mp.get_context("spawn")
    receiver_end, child_end = ctx.Pipe()
    receiver = ctx.Process(target=receive, args=(child_end, args.protocol), daemon=True)
    receiver.start()
    endpoint = receiver_end.recv()

    start_at = time.monotonic() + 4.0  # both samplers 2 s or more into their run: the counters are learned
    default = " (default)" if args.energy_poll == DEFAULT_ENERGY_POLL_S else ""
    configs = {f"energy polls every {args.energy_poll * 1e3:.0f} ms{default}": args.energy_poll,
               "no energy polls": None}
    runs = {}
    for label, poll in configs.items():
        here, there = ctx.Pipe()
        ctx.Process(target=sample, args=(there, endpoint, args.protocol, args, poll, start_at), daemon=True).start()
        runs[label] = here
    results = {label: conn.recv() for label, conn in runs.items()}
    receiver_end.send("stop")
    requests, points = receiver_end.recv()
    receiver.join(5)

    print(f"{args.gpus} simulated GPUs at {1 / args.interval:.0f} Hz, OTLP {args.protocol} to 127.0.0.1, "
          f"exports every {args.export_interval:g} s; two samplers side by side over {args.seconds:.0f} s "
          f"(load {os.getloadavg()[0]:.1f}); "
          f"receiver: {requests} requests, {points} points")
    for label, r in results.items():
        pct = 100 * r["cpu"] / r["wall"]
        split = ", ".join(f"{name} {100 * s / r['wall']:.3f} %" for name, s in r["by_thread"].items())
        print(f"  {label}: {pct:.3f} % of one core ({split}); {r['samples']} samples, {r['polls']} energy polls, "
              f"{r['sent']} points sent, {r['missed']} ticks missed")
    print("goal: < 0.5 % with the default settings")


if __name__ == "__main__":
    main()
