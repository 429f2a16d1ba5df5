"""CPU cost of the GPU power sampler: 8 simulated GPUs sampled at 10 Hz, batched, sent every
second over real OTLP/gRPC to a receiver on 127.0.0.1 (in a child process, so that its CPU is
not counted). Prints the sampler process's CPU time as a percentage of one core; the goal is
under 0.5 %.

    .venv/bin/python bench/sampler_cpu.py [--seconds 20] [--gpus 8] [--interval 0.1] [--energy-poll 0.02]

The default settings poll each energy counter every 20 ms between the 10 Hz ticks (see
docs/sampler.md); ``--energy-poll 0`` measures the sampler without those polls.

The simulated read is a few bisects and multiplications; a real NVML call is an ioctl into the
driver and costs more (tens of microseconds), so on a GPU node expect somewhat more.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import random
import resource
import time

from carbonspan.instrumentation.power.sampler import DEFAULT_ENERGY_POLL_S


def receive(conn) -> None:
    """Child process: an OTLP MetricsService on 127.0.0.1 that counts the points it gets."""
    from concurrent import futures

    import grpc
    from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc

    class Service(metrics_service_pb2_grpc.MetricsServiceServicer):
        points = requests = 0

        def Export(self, request, context):  # noqa: N802 - the gRPC method name
            Service.requests += 1
            for rm in request.resource_metrics:
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        Service.points += len(m.sum.data_points) + len(m.gauge.data_points)
            return metrics_service_pb2.ExportMetricsServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Service(), server)
    conn.send(server.add_insecure_port("127.0.0.1:0"))
    server.start()
    conn.recv()  # told to stop
    conn.send((Service.requests, Service.points))
    server.stop(grace=1).wait()


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument("--energy-poll", type=float, default=DEFAULT_ENERGY_POLL_S, help="0: no energy polls")
    args = parser.parse_args()

    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    receiver = ctx.Process(target=receive, args=(child,), daemon=True)
    receiver.start()
    port = parent.recv()

    from carbonspan.instrumentation.otlp_push import OtlpMetricsSender
    from carbonspan.instrumentation.power.sampler import start_sampler_thread
    from carbonspan.instrumentation.power.simulated import SimulatedGpu, SimulatedPowerSource

    rng = random.Random(1)
    # Each GPU's counter updates every 100 ms at its own phase, as independent boards do.
    source = SimulatedPowerSource([SimulatedGpu("H100 SXM", counter_phase_ns=rng.randrange(100_000_000))
                                   for _ in range(args.gpus)])
    now = time.time_ns()
    for gpu in source.simulated:  # a load that changes every 200 ms, set up before measuring
        for k in range(int(args.seconds * 5) + 10):
            gpu.set_utilization(rng.random(), at_ns=now + k * 200_000_000)

    sender = OtlpMetricsSender(f"http://127.0.0.1:{port}")
    start_cpu = cpu_s()
    running = start_sampler_thread(source, interval_s=args.interval, export_interval_s=1.0, sender=sender,
                                   resource={"service.name": "bench"}, energy_poll_s=args.energy_poll or None)
    time.sleep(2.0)  # past the one-off start (resource detection, first gRPC connection)
    start_cpu = cpu_s() - start_cpu
    samples0 = sum(s.samples for s in running.sampler.stats.values())
    polls0 = sum(s.polls for s in running.sampler.stats.values())
    cpu0, wall0 = cpu_s(), time.monotonic()
    time.sleep(args.seconds)
    cpu, wall = cpu_s() - cpu0, time.monotonic() - wall0
    running.stop()
    parent.send("stop")
    requests, points = parent.recv()
    receiver.join(5)

    samples = sum(s.samples for s in running.sampler.stats.values()) - samples0
    polls = sum(s.polls for s in running.sampler.stats.values()) - polls0
    poll = f"energy polls every {args.energy_poll * 1e3:.0f} ms" if args.energy_poll else "no energy polls"
    print(f"{args.gpus} simulated GPUs at {1 / args.interval:.0f} Hz ({poll}), measured over {wall:.1f} s: "
          f"{samples} samples, {polls} energy polls; "
          f"{running.batcher.sent_points} points sent in {requests} OTLP requests ({points} received), "
          f"{running.sampler.missed_ticks} ticks missed")
    print(f"start-up (first 2 s, not counted below): {start_cpu:.3f} s CPU")
    print(f"steady-state sampler CPU: {cpu:.3f} s = {100 * cpu / wall:.3f} % of one core "
          f"({1e6 * cpu / max(samples, 1):.1f} us per GPU sample; goal < 0.5 %)")


if __name__ == "__main__":
    main()
