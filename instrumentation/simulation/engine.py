"""The fleet in simulated time: continuous batching per worker, disaggregated and aggregated flows,
each GPU's true power, and the ground truth of each request's energy.

Each worker runs steps back to back while it has requests (as vLLM's engine loop does): in a step
every running decode sequence produces one token and prompt chunks fill the rest of the token
budget (chunked prefill); requests join the running batch between steps and leave it when done.
A disaggregated request prefills on a prefill node, its KV cache crosses the network to a decode
node, and it decodes there; an aggregated request does both on one node.

Ground truth: a step's energy on each GPU (its power times its length, both known exactly) is
split among the step's requests by their share of the step's tokens (prompt tokens computed,
plus one per decoding sequence): the work whose mix sets the power. GPU energy outside steps is
idle. So per GPU, the requests' truth plus idle is the GPU's energy, to rounding.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from carbonspan.instrumentation.simulation.fleet import ROLE_AGGREGATED, ROLE_DECODE, ROLE_PREFILL, FleetSpec, NodeSpec
from carbonspan.instrumentation.simulation.timeline import PowerTimeline
from carbonspan.instrumentation.simulation.workload import Arrival, WorkloadSpec, arrivals
from carbonspan.processors import semconv

PREFILL, DECODE = semconv.PHASE_PREFILL, semconv.PHASE_DECODE
KV_CONNECTOR = "NixlConnector"


@dataclass(frozen=True)
class PhaseRecord:
    """One phase of one request on one node: what becomes a span."""

    phase: str
    node: NodeSpec
    start_ns: int
    end_ns: int
    tokens: int = 0
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LoadPoint:
    """A worker's cumulative load counters at one time (a step boundary or an idle heartbeat)."""

    time_ns: int
    tokens: dict[str, int]  # by phase
    request_seconds: dict[str, float]  # by phase


@dataclass(eq=False)
class SimRequest:
    arrival: Arrival
    disaggregated: bool
    prefill_worker: Worker
    decode_worker: Worker
    state: str = "waiting"
    prefilled: int = 0
    decoded: int = 0  # decode steps done (each makes one token; the first token came from prefill)
    queued_ns: int = 0
    prefill_start_ns: int | None = None
    decode_start_ns: int | None = None
    finished_ns: int | None = None
    #: ground truth: joules per GPU id, and per phase.
    truth_gpu_j: dict[str, float] = field(default_factory=dict)
    truth_phase_j: dict[str, float] = field(default_factory=dict)

    @property
    def request_id(self) -> str:
        return f"req-{self.arrival.index:06d}"

    @property
    def decode_steps(self) -> int:
        return self.arrival.output_tokens - 1

    @property
    def truth_j(self) -> float:
        return sum(self.truth_gpu_j.values())


@dataclass
class _Step:
    end_ns: int
    chunks: list[tuple[SimRequest, int]]
    decoding: list[SimRequest]


class Worker:
    """One engine on its GPUs: a waiting queue, a running batch, and the GPUs' power timelines."""

    def __init__(self, node: NodeSpec, start_ns: int, rng: np.random.Generator, heartbeat_ns: int) -> None:
        self.node = node
        self.gpu_ids = node.gpu_ids()
        profile = node.profile
        self.idle_w, self.max_w = profile.idle_w, profile.max_w
        self.perf = node.performance
        self.tp_speedup = 1 + (node.gpu_count - 1) * self.perf.tp_efficiency
        spread = rng.standard_normal(node.gpu_count) * node.power_spread
        self.power_factors = np.clip(1 + spread, 0.9, 1.1).tolist()
        self.timelines = {g: PowerTimeline(start_ns, self.idle_w) for g in self.gpu_ids}
        self.step_energy_j = dict.fromkeys(self.gpu_ids, 0.0)
        self.waiting: deque[SimRequest] = deque()
        self.running: list[SimRequest] = []
        self.step: _Step | None = None
        self.steps = 0
        self.heartbeat_ns = heartbeat_ns
        self._tokens = {PREFILL: 0, DECODE: 0}
        self._request_s = {PREFILL: 0.0, DECODE: 0.0}
        self.load_points: list[LoadPoint] = []
        self._last_point_ns = start_ns
        self._record_point(start_ns)

    @property
    def load(self) -> int:
        return len(self.waiting) + len(self.running)

    def _record_point(self, time_ns: int) -> None:
        self.load_points.append(LoadPoint(time_ns, dict(self._tokens), dict(self._request_s)))
        self._last_point_ns = time_ns

    def heartbeat(self, until_ns: int) -> None:
        """While idle, repeat the counters now and then so the join knows the worker is current."""
        if self.step is not None:
            return
        while self._last_point_ns + self.heartbeat_ns <= until_ns:
            self._record_point(self._last_point_ns + self.heartbeat_ns)

    def start_step(self, now_ns: int, phase_ended: Callable[[SimRequest, PhaseRecord], None]) -> int | None:
        """Form the next batch and run it; the step's end time, or None when there is nothing to do."""
        node = self.node
        decoding = [r for r in self.running if r.state == DECODE]
        budget = node.max_batched_tokens - len(decoding)
        chunks: list[tuple[SimRequest, int]] = []
        for r in self.running:
            if r.state == PREFILL and budget > 0:
                chunk = min(r.arrival.prompt_tokens - r.prefilled, budget)
                chunks.append((r, chunk))
                budget -= chunk
        while self.waiting and len(self.running) < node.max_num_seqs and (node.role == ROLE_DECODE or budget > 0):
            r = self.waiting.popleft()
            self.running.append(r)
            if now_ns > r.queued_ns or node.role != ROLE_DECODE:
                phase_ended(r, PhaseRecord(semconv.PHASE_QUEUE, node, r.queued_ns, now_ns))
            if node.role == ROLE_DECODE:
                r.state = DECODE
                decoding.append(r)
            else:
                r.state = PREFILL
                r.prefill_start_ns = now_ns
                chunk = min(r.arrival.prompt_tokens, budget)
                chunks.append((r, chunk))
                budget -= chunk
        prefill_tokens = sum(c for _, c in chunks)
        if prefill_tokens + len(decoding) == 0:
            return None
        for r in decoding:
            if r.decode_start_ns is None:
                r.decode_start_ns = now_ns
        perf = self.perf
        t_base = perf.step_base_s / self.tp_speedup
        t_prefill = prefill_tokens * perf.prefill_token_s / self.tp_speedup
        t_decode = len(decoding) * perf.decode_seq_s / self.tp_speedup
        duration_s = t_base + t_prefill + t_decode
        intensity = (
            t_base * perf.base_intensity + t_prefill * perf.prefill_intensity + t_decode * perf.decode_intensity
        ) / duration_s
        duration_ns = max(1, round(duration_s * 1e9))
        end_ns = now_ns + duration_ns
        if now_ns > self._last_point_ns:
            self._record_point(now_ns)  # where the step began: a flat series that resumes needs it
        work = prefill_tokens + len(decoding)
        for gpu, factor in zip(self.gpu_ids, self.power_factors, strict=True):
            watts = min(self.idle_w + (self.max_w - self.idle_w) * intensity * factor, self.max_w)
            timeline = self.timelines[gpu]
            timeline.set(now_ns, watts)
            timeline.set(end_ns, self.idle_w)
            energy = watts * duration_ns * 1e-9
            self.step_energy_j[gpu] += energy
            for r, chunk in chunks:
                _credit(r, gpu, PREFILL, energy * chunk / work)
            for r in decoding:
                _credit(r, gpu, DECODE, energy / work)
        # request-seconds: every request inside a prefill or decode span, for the step's length
        in_prefill = sum(1 for r in self.running if r.state == PREFILL)
        self._tokens[PREFILL] += prefill_tokens
        self._tokens[DECODE] += len(decoding)
        self._request_s[PREFILL] += in_prefill * duration_ns * 1e-9
        self._request_s[DECODE] += len(decoding) * duration_ns * 1e-9
        self.step = _Step(end_ns, chunks, decoding)
        self.steps += 1
        return end_ns

    def finish_step(
        self, phase_ended: Callable[[SimRequest, PhaseRecord], None]
    ) -> tuple[list[SimRequest], list[SimRequest]]:
        """Apply the step's progress: (requests whose prefill completed here on a prefill node,
        requests that finished)."""
        step = self.step
        assert step is not None
        self.step = None
        self._record_point(step.end_ns)
        handed_off, finished = [], []
        for r, chunk in step.chunks:
            r.prefilled += chunk
            if r.prefilled < r.arrival.prompt_tokens:
                continue
            phase_ended(r, PhaseRecord(PREFILL, self.node, r.prefill_start_ns or step.end_ns, step.end_ns,
                                       tokens=r.arrival.prompt_tokens))
            if self.node.role == ROLE_PREFILL:
                self.running.remove(r)
                r.state = "kv_transfer"
                handed_off.append(r)
            else:
                r.state = DECODE
        for r in step.decoding:
            r.decoded += 1
            if r.decoded == r.decode_steps:
                phase_ended(r, PhaseRecord(DECODE, self.node, r.decode_start_ns or step.end_ns, step.end_ns,
                                           tokens=r.decode_steps))
                self.running.remove(r)
                r.state = "done"
                r.finished_ns = step.end_ns
                finished.append(r)
        return handed_off, finished

    def drain_points(self) -> list[LoadPoint]:
        points, self.load_points = self.load_points, []
        return points

    def idle_energy_j(self, gpu_id: str, until_ns: int) -> float:
        """The GPU's energy outside steps, from the start to ``until_ns`` (no step running then)."""
        timeline = self.timelines[gpu_id]
        return timeline.energy_until(until_ns) - self.step_energy_j[gpu_id]


def _credit(r: SimRequest, gpu: str, phase: str, joules: float) -> None:
    r.truth_gpu_j[gpu] = r.truth_gpu_j.get(gpu, 0.0) + joules
    r.truth_phase_j[phase] = r.truth_phase_j.get(phase, 0.0) + joules


class FleetSimulation:
    """Discrete-event simulation of the fleet; ``advance_to`` moves simulated time forward.

    Everything observable is pulled from it: ``drain_phases`` (phase records as they end),
    ``drain_finished`` (requests done, with their ground truth), each worker's ``drain_points``
    (load counters) and ``timelines`` (the GPUs' true power, known up to at least ``now_ns``).
    """

    def __init__(self, fleet: FleetSpec, workload: WorkloadSpec, *, start_ns: int, seed: int = 0,
                 max_requests: int | None = None, arrivals_until_ns: int | None = None,
                 heartbeat_ns: int = 100_000_000) -> None:
        self.fleet = fleet
        self.workload = workload
        self.start_ns = self.now_ns = start_ns
        self.max_requests = max_requests
        self.arrivals_until_ns = arrivals_until_ns
        self._arrivals_over = False
        streams = np.random.SeedSequence(seed).spawn(3)
        arrivals_rng, self._route_rng, hw_rng = (np.random.default_rng(s) for s in streams)
        self.workers = {n.name: Worker(n, start_ns, hw_rng, heartbeat_ns) for n in fleet.nodes}
        self._events: list[tuple[int, int, str, Any]] = []
        self._seq = itertools.count()
        self._arrivals: Iterator[Arrival] = arrivals(workload, start_ns, arrivals_rng)
        self.arrived = 0
        self.in_flight: dict[int, SimRequest] = {}
        self._phases: list[tuple[SimRequest, PhaseRecord]] = []
        self._arrived_list: list[SimRequest] = []
        self._finished: list[SimRequest] = []
        self._next_arrival()

    # ------------------------------------------------------------------ driving
    def advance_to(self, time_ns: int) -> None:
        events = self._events
        while events and events[0][0] <= time_ns:
            t, _, kind, payload = heapq.heappop(events)
            if kind == "arrival":
                self._on_arrival(t, payload)
            elif kind == "step_end":
                self._on_step_end(t, payload)
            else:
                self._on_kv_ready(t, payload)
        for worker in self.workers.values():
            worker.heartbeat(time_ns)
        self.now_ns = max(self.now_ns, time_ns)

    @property
    def done(self) -> bool:
        """No more requests will arrive (``max_requests`` or ``arrivals_until_ns`` reached) and all have finished."""
        return self._arrivals_over and not self.in_flight

    def drain_arrived(self) -> list[SimRequest]:
        out, self._arrived_list = self._arrived_list, []
        return out

    def drain_phases(self) -> list[tuple[SimRequest, PhaseRecord]]:
        out, self._phases = self._phases, []
        return out

    def drain_finished(self) -> list[SimRequest]:
        out, self._finished = self._finished, []
        return out

    def gpu_energy_j(self, until_ns: int | None = None) -> dict[str, float]:
        until = self.now_ns if until_ns is None else until_ns
        return {g: w.timelines[g].energy_until(until) for w in self.workers.values() for g in w.gpu_ids}

    def gpu_idle_j(self, until_ns: int | None = None) -> dict[str, float]:
        until = self.now_ns if until_ns is None else until_ns
        return {g: w.idle_energy_j(g, until) for w in self.workers.values() for g in w.gpu_ids}

    # ------------------------------------------------------------------ events
    def _push(self, time_ns: int, kind: str, payload: Any) -> None:
        heapq.heappush(self._events, (time_ns, next(self._seq), kind, payload))

    def _next_arrival(self) -> None:
        if self.max_requests is not None and self.arrived >= self.max_requests:
            self._arrivals_over = True
            return
        arrival = next(self._arrivals)
        if self.arrivals_until_ns is not None and arrival.time_ns > self.arrivals_until_ns:
            self._arrivals_over = True
            return
        self._push(arrival.time_ns, "arrival", arrival)

    def _phase_ended(self, request: SimRequest, record: PhaseRecord) -> None:
        self._phases.append((request, record))

    def _least_loaded(self, role: str) -> Worker:
        return min((self.workers[n.name] for n in self.fleet.by_role(role)), key=lambda w: w.load)

    def _on_arrival(self, t: int, arrival: Arrival) -> None:
        self.arrived += 1
        self._next_arrival()
        fleet = self.fleet
        can_split = bool(fleet.by_role(ROLE_PREFILL) and fleet.by_role(ROLE_DECODE))
        split = can_split and (
            not fleet.by_role(ROLE_AGGREGATED) or self._route_rng.random() < fleet.disaggregated_share
        )
        if split:
            request = SimRequest(arrival, True, self._least_loaded(ROLE_PREFILL), self._least_loaded(ROLE_DECODE))
        else:
            worker = self._least_loaded(ROLE_AGGREGATED)
            request = SimRequest(arrival, False, worker, worker)
        request.queued_ns = t
        self.in_flight[arrival.index] = request
        self._arrived_list.append(request)
        self._enqueue(request.prefill_worker, request, t)

    def _enqueue(self, worker: Worker, request: SimRequest, t: int) -> None:
        request.state = "waiting"
        request.queued_ns = t
        worker.waiting.append(request)
        if worker.step is None:
            self._start(worker, t)

    def _start(self, worker: Worker, t: int) -> None:
        end = worker.start_step(t, self._phase_ended)
        if end is not None:
            self._push(end, "step_end", worker)

    def _on_step_end(self, t: int, worker: Worker) -> None:
        handed_off, finished = worker.finish_step(self._phase_ended)
        for request in handed_off:
            self._hand_off(t, request)
        for request in finished:
            del self.in_flight[request.arrival.index]
            self._finished.append(request)
        self._start(worker, t)

    def _hand_off(self, t: int, request: SimRequest) -> None:
        fleet = self.fleet
        src, dst = request.prefill_worker.node, request.decode_worker.node
        same = (src.provider, src.region) == (dst.provider, dst.region)
        kv_bytes = request.arrival.prompt_tokens * fleet.kv_bytes_per_token
        bandwidth = fleet.kv_bandwidth_same_region_bps if same else fleet.kv_bandwidth_cross_region_bps
        latency = fleet.kv_latency_same_region_s if same else fleet.kv_latency_cross_region_s
        duration_ns = round((latency + kv_bytes * 8 / bandwidth) * 1e9)
        blocks = -(-request.arrival.prompt_tokens // fleet.kv_block_tokens)
        transfer = PhaseRecord(semconv.PHASE_KV_TRANSFER, dst, t, t + duration_ns, attributes={
            semconv.CARBON_KV_BYTES: kv_bytes,
            semconv.CARBON_KV_BLOCKS: blocks,
            semconv.CARBON_KV_CONNECTOR: KV_CONNECTOR,
            semconv.CARBON_KV_REMOTE_ENGINE: src.instance,
        })
        self._push(t + duration_ns, "kv_ready", (request, transfer))

    def _on_kv_ready(self, t: int, payload: tuple[SimRequest, PhaseRecord]) -> None:
        request, transfer = payload
        self._phase_ended(request, transfer)  # the decode side ends the span when the KV cache is in
        self._enqueue(request.decode_worker, request, t)
