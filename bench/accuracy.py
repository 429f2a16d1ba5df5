"""Accuracy of the carbon join against the simulator's ground truth.

The simulated fleet (prefill on 4x H100, decode on 2x A100, an aggregated L40S; continuous
batching; power that depends on each step's mix of prompt and decode tokens) is read by the real
sampler code and its OTLP output is fed, with the simulated workers' spans and load counters, into
``CarbonJoin`` in process. For each input (energy counter or power only, sampled at 1 or 10 Hz)
and each policy (tokens, time) it prints the per-request error of ``carbon.energy.joules`` summed
over the request's spans against the energy the simulator assigned it, and the per-GPU
conservation error (attributed + idle vs measured, from ``CarbonJoin.gpu_ledger()``).

The ground truth splits each step's energy by tokens, so the ``time`` policy's error is how far
that other convention lands from it, not a measurement error.

    python bench/accuracy.py [--duration 90] [--seed 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import time
from dataclasses import dataclass

import numpy as np

from carbonspan.instrumentation.power.sampler import DEFAULT_ENERGY_POLL_S
from carbonspan.instrumentation.simulation.replay import Batch, Replay, ReplaySettings
from carbonspan.processors import semconv
from carbonspan.processors.attribution import POLICIES
from carbonspan.processors.facility import FacilityTables
from carbonspan.processors.intensity import StaticTableProvider
from carbonspan.processors.join import CarbonJoin, JoinSettings
from carbonspan.processors.otlp import attributes_to_dict

START_NS = 1_700_000_000 * 10**9


@dataclass(frozen=True)
class Case:
    label: str
    energy_counter: bool
    sample_interval_s: float
    sampler_phase_ns: int = 37_000_000  # the sampler ticks 37 ms after NVML last updated the counter
    energy_poll_s: float | None = DEFAULT_ENERGY_POLL_S
    #: each GPU's counter updates at its own random phase (independent boards), not all 37 ms before the ticks
    random_counter_phases: bool = False


CASES = (
    Case("energy counter, 10 Hz", True, 0.1),
    Case("energy counter, 10 Hz, each GPU's counter at its own phase", True, 0.1, random_counter_phases=True),
    Case("energy counter, 1 Hz", True, 1.0),
    Case("energy counter, 1 Hz, each GPU's counter at its own phase", True, 1.0, random_counter_phases=True),
    Case("power only (1-s avg), 10 Hz", False, 0.1),
    Case("power only (1-s avg), 1 Hz", False, 1.0),
    # diagnostics: what NVML's 100 ms counter staleness costs without the energy polls
    Case("diagnostic: energy counter, 10 Hz, no polls (counter read at the ticks)", True, 0.1, energy_poll_s=None),
    Case("diagnostic: energy counter, 10 Hz, no polls, ticks as the counter updates", True, 0.1, 0, None),
    Case("diagnostic: energy counter, 50 Hz ticks, no polls", True, 0.02, energy_poll_s=None),
)


@dataclass
class Row:
    case: str
    policy: str
    requests: int
    median_pct: float
    p95_pct: float
    total_pct: float
    conservation_pct: float


class JoinUnderTest:
    def __init__(self, policy: str) -> None:
        self.policy = policy
        self.join = CarbonJoin(JoinSettings(policy=policy), StaticTableProvider(), FacilityTables.default())
        self.measured: dict[str, float] = {}

    def feed(self, batch: Batch) -> None:
        for request in batch.metrics:
            self.join.add_metrics(request.resource_metrics)
        if batch.traces is not None:
            traces = type(batch.traces)()
            traces.CopyFrom(batch.traces)  # the join takes spans out of the messages it is handed: one copy per join
            self._collect(self.join.add_spans(traces.resource_spans, batch.time_ns))  # those that need no energy
        self._collect(self.join.release(batch.time_ns))

    def finish(self, now_ns: int) -> None:
        self._collect(self.join.release(now_ns, flush=True))

    def _collect(self, released) -> None:
        for rs in released:
            for ss in rs.scope_spans:
                for span in ss.spans:
                    attrs = attributes_to_dict(span.attributes)
                    if attrs.get(semconv.CARBON_PHASE) in semconv.COMPUTE_PHASES:
                        rid = attrs[semconv.GEN_AI_REQUEST_ID]
                        self.measured[rid] = self.measured.get(rid, 0.0) + attrs[semconv.CARBON_ENERGY_JOULES]


def run_case(case: Case, duration_s: float, seed: int) -> list[Row]:
    settings = ReplaySettings(duration_s=duration_s, seed=seed, energy_counter=case.energy_counter,
                              sample_interval_s=case.sample_interval_s, sampler_phase_ns=case.sampler_phase_ns,
                              energy_poll_s=case.energy_poll_s)
    replay = Replay(settings=settings, start_ns=START_NS)
    if case.random_counter_phases:
        rng = random.Random(seed)
        for node in replay.samplers:
            for gpu in node.gpus:
                gpu.counter_phase_ns = rng.randrange(gpu.counter_update_ns)
    joins = [JoinUnderTest(policy) for policy in POLICIES]
    truth: dict[str, float] = {}

    def sink(batch: Batch) -> None:
        for request in batch.finished:
            truth[request.request_id] = request.truth_j
        for j in joins:
            j.feed(batch)

    replay.run(sink)
    rows = []
    for j in joins:
        j.finish(replay.sim.now_ns)
        errors = np.array([j.measured[r] / t - 1 for r, t in truth.items()])
        total = sum(j.measured[r] for r in truth) / sum(truth.values()) - 1
        ledger = j.join.gpu_ledger()
        conservation = max(abs(g.attributed_j + g.idle_j - g.measured_j) / g.measured_j for g in ledger)
        rows.append(Row(case.label, j.policy, len(errors), 100 * float(np.median(np.abs(errors))),
                        100 * float(np.percentile(np.abs(errors), 95)), 100 * total, 100 * conservation))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=90.0, help="simulated seconds of arrivals")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cases", help="only the cases whose label contains this text")
    parser.add_argument("--energy-poll", type=float, default=DEFAULT_ENERGY_POLL_S,
                        help=f"the energy poll period of the cases that poll (default {DEFAULT_ENERGY_POLL_S} s)")
    args = parser.parse_args()
    started = time.monotonic()
    print("| input | policy | requests | median error | p95 error | total error | conservation (max GPU) |")
    print("|---|---|---|---|---|---|---|")
    for case in CASES:
        if args.cases and args.cases not in case.label:
            continue
        if case.energy_poll_s is not None:
            case = dataclasses.replace(case, energy_poll_s=args.energy_poll)
        for row in run_case(case, args.duration, args.seed):
            print(f"| {row.case} | {row.policy} | {row.requests} | {row.median_pct:.2f} % | {row.p95_pct:.2f} % "
                  f"| {row.total_pct:+.2f} % | {row.conservation_pct:.3f} % |", flush=True)
    print(f"\n{args.duration:.0f} s of simulated arrivals per case, seed {args.seed}, "
          f"energy polls every {args.energy_poll * 1e3:.0f} ms; "
          f"wall time {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
