"""Pure timeline logic: a finished request's timestamps -> phase span windows, and per-step
batch composition -> cumulative worker load points. No vLLM import, no clock reads, so that the
rules the join depends on (which tokens count, where a counter point falls) are unit-tested alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from carbonspan.instrumentation.vllm.clock import ClockAlignment
from carbonspan.processors import semconv

AttributeMap = dict[str, str | int | float]


@dataclass(frozen=True, slots=True)
class KvTransfer:
    """What the wrapping connector saw on the receiving side (EngineCore monotonic seconds)."""

    start_s: float
    end_s: float
    num_bytes: int
    num_blocks: int
    num_tokens: int
    connector: str
    remote_engine: str | None = None

    def to_params(self) -> dict:
        return {"start_s": self.start_s, "end_s": self.end_s, "bytes": self.num_bytes, "blocks": self.num_blocks,
                "tokens": self.num_tokens, "connector": self.connector, "remote_engine": self.remote_engine}

    @classmethod
    def from_params(cls, params: Mapping) -> KvTransfer:
        return cls(float(params["start_s"]), float(params["end_s"]), int(params["bytes"]), int(params["blocks"]),
                   int(params["tokens"]), str(params["connector"]), params.get("remote_engine"))


@dataclass(frozen=True, slots=True)
class FinishedRequest:
    """A finished request as vLLM's frontend knows it (RequestStateStats + RequestState)."""

    request_id: str
    model: str
    prompt_tokens: int
    cached_tokens: int
    generated_tokens: int
    queued_s: float  # EngineCore monotonic
    scheduled_s: float
    first_token_s: float
    last_token_s: float
    kv: KvTransfer | None = None


@dataclass(frozen=True, slots=True)
class PhaseWindow:
    phase: str
    start_ns: int
    end_ns: int
    attributes: AttributeMap = field(default_factory=dict)


def phase_windows(request: FinishedRequest, clock: ClockAlignment) -> list[PhaseWindow]:
    """The phase spans of one request, in time order.

    Prefill's ``carbon.tokens`` is the prompt tokens the worker computed: prompt minus what came
    from a cache or a KV transfer. Decode's is the tokens made by decode steps: the first output
    token comes out of the prefill step, so a request that generated n tokens decoded n - 1 (a
    disaggregated prefill worker's max_tokens=1 request therefore has no decode span). These are
    the same tokens the worker load counter counts per phase, which the ``tokens`` policy needs.
    """
    common: AttributeMap = {
        semconv.GEN_AI_REQUEST_MODEL: request.model,
        semconv.GEN_AI_REQUEST_ID: request.request_id,
        semconv.GEN_AI_USAGE_INPUT_TOKENS: request.prompt_tokens,
        semconv.GEN_AI_USAGE_OUTPUT_TOKENS: request.generated_tokens,
    }
    windows: list[PhaseWindow] = []

    def add(phase: str, start_s: float, end_s: float, extra: AttributeMap) -> None:
        if start_s <= 0.0 or end_s < start_s:
            return
        windows.append(PhaseWindow(phase, clock.wall_ns(start_s), clock.wall_ns(end_s),
                                   {semconv.CARBON_PHASE: phase, **common, **extra}))

    if request.scheduled_s > 0.0:
        add(semconv.PHASE_QUEUE, request.queued_s, request.scheduled_s, {})
    if request.kv is not None:
        kv = request.kv
        extra: AttributeMap = {semconv.CARBON_KV_BYTES: kv.num_bytes, semconv.CARBON_KV_BLOCKS: kv.num_blocks,
                               semconv.CARBON_KV_CONNECTOR: kv.connector}
        if kv.remote_engine:
            extra[semconv.CARBON_KV_REMOTE_ENGINE] = kv.remote_engine
        add(semconv.PHASE_KV_TRANSFER, kv.start_s, kv.end_s, extra)
    if request.first_token_s > 0.0:
        reused = max(request.cached_tokens, request.kv.num_tokens if request.kv else 0)
        computed = max(0, request.prompt_tokens - reused)
        add(semconv.PHASE_PREFILL, request.scheduled_s, request.first_token_s, {semconv.CARBON_TOKENS: computed})
        if request.generated_tokens > 1:
            add(semconv.PHASE_DECODE, request.first_token_s, request.last_token_s,
                {semconv.CARBON_TOKENS: request.generated_tokens - 1})
    windows.sort(key=lambda w: (w.start_ns, w.end_ns))
    return windows


# ------------------------------------------------------------------------------------ load


class StepLoad(NamedTuple):
    """One engine step: its wall-clock window and what its batch held, by phase (a NamedTuple:
    one is made per engine step, on the engine's thread)."""

    start_ns: int
    end_ns: int
    prefill_tokens: int
    decode_tokens: int
    prefill_requests: int
    decode_requests: int


class LoadPoint(NamedTuple):
    metric: str  # semconv.CARBON_WORKER_TOKENS or CARBON_WORKER_REQUEST_TIME
    phase: str
    time_ns: int
    value: float


_SERIES = tuple((metric, phase) for metric in (semconv.CARBON_WORKER_TOKENS, semconv.CARBON_WORKER_REQUEST_TIME)
                for phase in semconv.COMPUTE_PHASES)


class WorkerLoad:
    """Cumulative tokens and request-seconds a worker computed, by phase, as timestamped points.

    The join interpolates these counters linearly between points, so the points fall on step
    boundaries: a series that grows in a step gets a point at the step's end, and, when its last
    point is older than the step's start (it was flat, or the worker idle), one more at the
    step's start with the old total, so that the flat stretch stays flat instead of the step's
    work being smeared back over it. A series that does not change in a step gets no point (a
    decode-only step sends 2 points, not 8). Request-time grows only by the requests that were in
    the step's batch in that phase, for the step's duration. While no step runs, ``heartbeat``
    repeats every total so the join always has a point past a span's end.
    """

    def __init__(self, start_ns: int) -> None:
        self.start_ns = start_ns
        self._totals: dict[tuple[str, str], float] = {key: 0.0 for key in _SERIES}
        self._last_point: dict[tuple[str, str], int] = {key: start_ns for key in _SERIES}
        self.last_ns = start_ns

    def _points(self, time_ns: int) -> list[LoadPoint]:
        for key in _SERIES:
            self._last_point[key] = time_ns
        return [LoadPoint(metric, phase, time_ns, value) for (metric, phase), value in self._totals.items()]

    def initial(self) -> list[LoadPoint]:
        return self._points(self.start_ns)

    def step(self, step: StepLoad) -> list[LoadPoint]:
        start = max(step.start_ns, self.last_ns)
        end = max(step.end_ns, start)
        seconds = (end - start) / 1e9
        increments = (
            ((semconv.CARBON_WORKER_TOKENS, semconv.PHASE_PREFILL), step.prefill_tokens),
            ((semconv.CARBON_WORKER_TOKENS, semconv.PHASE_DECODE), step.decode_tokens),
            ((semconv.CARBON_WORKER_REQUEST_TIME, semconv.PHASE_PREFILL), step.prefill_requests * seconds),
            ((semconv.CARBON_WORKER_REQUEST_TIME, semconv.PHASE_DECODE), step.decode_requests * seconds),
        )
        points = []
        for key, delta in increments:
            if not delta:
                continue
            old = self._totals[key]
            if self._last_point[key] < start:
                points.append(LoadPoint(key[0], key[1], start, old))
            self._totals[key] = old + delta
            self._last_point[key] = end
            points.append(LoadPoint(key[0], key[1], end, old + delta))
        self.last_ns = end
        return points

    def heartbeat(self, now_ns: int, every_ns: int) -> list[LoadPoint]:
        if now_ns - self.last_ns < every_ns:
            return []
        self.last_ns = now_ns
        return self._points(now_ns)

    def total(self, metric: str, phase: str) -> float:
        return self._totals[metric, phase]
