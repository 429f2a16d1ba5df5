"""The vLLM plugin's pure logic, without vLLM: clock alignment, request -> phase windows, step
stats -> load counter points, KV transfer bookkeeping, the proxy's request rewriting, resource."""

from __future__ import annotations

import types

import pytest

from carbonspan.instrumentation.vllm.clock import ClockAlignment
from carbonspan.instrumentation.vllm.connector import _TransferClock
from carbonspan.instrumentation.vllm.plugin import step_load
from carbonspan.instrumentation.vllm.proxy import prefill_request, trace_headers
from carbonspan.instrumentation.vllm.resource import worker_resource
from carbonspan.instrumentation.vllm.timeline import FinishedRequest, KvTransfer, StepLoad, WorkerLoad, phase_windows
from carbonspan.processors import semconv

MS = 1_000_000
WALL0 = 1_800_000_000 * 10**9
CLOCK = ClockAlignment(offset_ns=WALL0 - 1000 * 10**9, uncertainty_ns=0)  # monotonic 1000 s == WALL0


def ticking(start: int, step: int):
    value = [start - step]

    def read() -> int:
        value[0] += step
        return value[0]

    return read


def test_clock_offset_comes_from_the_tightest_bracket():
    # monotonic reads 5 us apart, wall read in between: offset = wall - midpoint
    alignment = ClockAlignment.measure(reads=4, monotonic_ns=ticking(10**9, 5_000), wall_ns=ticking(WALL0, 1))
    assert alignment.offset_ns == WALL0 - (10**9 + 2_500)
    assert alignment.uncertainty_ns == 2_500
    assert alignment.wall_ns(1.0) == WALL0 - 2_500
    assert alignment.monotonic_s(alignment.wall_ns(1234.5)) == pytest.approx(1234.5, abs=1e-9)


def test_clock_alignment_of_this_process_maps_monotonic_now_to_wall_now():
    import time

    alignment = ClockAlignment.measure()
    assert abs(alignment.wall_ns(time.monotonic()) - time.time_ns()) < 5 * MS


def request(**kw) -> FinishedRequest:
    fields = dict(request_id="r1", model="m", prompt_tokens=100, cached_tokens=0, generated_tokens=8,
                  queued_s=1000.0, scheduled_s=1000.010, first_token_s=1000.050, last_token_s=1000.120)
    fields.update(kw)
    return FinishedRequest(**fields)


def test_aggregated_request_has_queue_prefill_decode_back_to_back():
    windows = phase_windows(request(), CLOCK)
    assert [w.phase for w in windows] == [semconv.PHASE_QUEUE, semconv.PHASE_PREFILL, semconv.PHASE_DECODE]
    assert [(w.start_ns - WALL0, w.end_ns - WALL0) for w in windows] == [
        (0, 10 * MS), (10 * MS, 50 * MS), (50 * MS, 120 * MS)]
    prefill, decode = windows[1].attributes, windows[2].attributes
    assert prefill[semconv.CARBON_TOKENS] == 100 and decode[semconv.CARBON_TOKENS] == 7
    assert prefill[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == 8 and prefill[semconv.GEN_AI_REQUEST_ID] == "r1"


def test_cached_prompt_tokens_are_not_computed_tokens():
    (_, prefill, _) = phase_windows(request(cached_tokens=64), CLOCK)
    assert prefill.attributes[semconv.CARBON_TOKENS] == 36


def test_prefill_engine_of_a_disaggregated_request_has_no_decode_span():
    windows = phase_windows(request(generated_tokens=1, last_token_s=1000.050), CLOCK)
    assert [w.phase for w in windows] == [semconv.PHASE_QUEUE, semconv.PHASE_PREFILL]


def test_decode_engine_gets_a_kv_transfer_span_and_computes_only_what_was_not_transferred():
    kv = KvTransfer(1000.002, 1000.030, 196608, 3, 96, "NixlConnector", "engine-p")
    windows = phase_windows(request(kv=kv), CLOCK)
    transfer = next(w for w in windows if w.phase == semconv.PHASE_KV_TRANSFER)
    assert (transfer.start_ns - WALL0, transfer.end_ns - WALL0) == (2 * MS, 30 * MS)
    assert transfer.attributes[semconv.CARBON_KV_BYTES] == 196608
    assert transfer.attributes[semconv.CARBON_KV_BLOCKS] == 3
    assert transfer.attributes[semconv.CARBON_KV_REMOTE_ENGINE] == "engine-p"
    prefill = next(w for w in windows if w.phase == semconv.PHASE_PREFILL)
    assert prefill.attributes[semconv.CARBON_TOKENS] == 4
    assert KvTransfer.from_params(kv.to_params()) == kv


def test_request_aborted_before_scheduling_has_no_phase_spans():
    assert phase_windows(request(scheduled_s=0.0, first_token_s=0.0, last_token_s=0.0), CLOCK) == []


def totals(points, metric, phase):
    return [(p.time_ns, p.value) for p in points if p.metric == metric and p.phase == phase]


def test_step_after_idle_gets_a_flat_point_where_it_began():
    load = WorkerLoad(start_ns=0)
    load.step(StepLoad(0, 10 * MS, 100, 0, 2, 0))
    points = load.step(StepLoad(500 * MS, 520 * MS, 0, 4, 0, 4))
    assert totals(points, semconv.CARBON_WORKER_TOKENS, semconv.PHASE_DECODE) == [(500 * MS, 0), (520 * MS, 4)]
    assert totals(points, semconv.CARBON_WORKER_TOKENS, semconv.PHASE_PREFILL) == []  # unchanged: no point


def test_back_to_back_steps_share_their_boundary_point():
    load = WorkerLoad(start_ns=0)
    load.step(StepLoad(0, 10 * MS, 0, 2, 0, 2))
    points = load.step(StepLoad(10 * MS, 15 * MS, 0, 2, 0, 2))
    assert {p.time_ns for p in points} == {15 * MS} and len(points) == 2


def test_series_that_resumes_after_being_flat_gets_a_point_where_its_step_began():
    load = WorkerLoad(start_ns=0)
    load.step(StepLoad(0, 10 * MS, 100, 0, 1, 0))  # prefill
    load.step(StepLoad(10 * MS, 15 * MS, 0, 1, 0, 1))  # decode only: prefill stays flat
    points = load.step(StepLoad(15 * MS, 25 * MS, 50, 1, 1, 1))  # a new prefill joins the batch
    assert totals(points, semconv.CARBON_WORKER_TOKENS, semconv.PHASE_PREFILL) == [(15 * MS, 100), (25 * MS, 150)]
    assert totals(points, semconv.CARBON_WORKER_TOKENS, semconv.PHASE_DECODE) == [(25 * MS, 2)]


def test_request_time_counts_requests_only_in_their_phase_for_the_step_length():
    load = WorkerLoad(start_ns=0)
    load.step(StepLoad(0, 20 * MS, 50, 3, 1, 3))  # mixed batch: 1 prefilling, 3 decoding
    assert load.total(semconv.CARBON_WORKER_REQUEST_TIME, semconv.PHASE_PREFILL) == pytest.approx(0.020)
    assert load.total(semconv.CARBON_WORKER_REQUEST_TIME, semconv.PHASE_DECODE) == pytest.approx(0.060)
    assert load.total(semconv.CARBON_WORKER_TOKENS, semconv.PHASE_PREFILL) == 50


def test_overlapping_step_is_clamped_to_the_previous_end():
    load = WorkerLoad(start_ns=0)
    load.step(StepLoad(0, 10 * MS, 10, 0, 1, 0))
    load.step(StepLoad(5 * MS, 12 * MS, 0, 1, 0, 1))
    assert load.total(semconv.CARBON_WORKER_REQUEST_TIME, semconv.PHASE_DECODE) == pytest.approx(0.002)


def test_heartbeat_repeats_totals_only_when_idle_long_enough():
    load = WorkerLoad(start_ns=0)
    load.step(StepLoad(0, 10 * MS, 10, 0, 1, 0))
    assert load.heartbeat(500 * MS, every_ns=1000 * MS) == []
    beat = load.heartbeat(1500 * MS, every_ns=1000 * MS)
    assert {p.time_ns for p in beat} == {1500 * MS}
    assert totals(beat, semconv.CARBON_WORKER_TOKENS, semconv.PHASE_PREFILL) == [(1500 * MS, 10)]


def details(**kw):
    fields = dict(num_ctx_tokens=64, num_generation_tokens=3, num_ctx_requests=1, num_generation_requests=3,
                  elapsed_ms=4.0, is_dummy=False)
    fields.update(kw)
    return types.SimpleNamespace(iteration_details=types.SimpleNamespace(**fields), num_running_reqs=4)


def iteration(end_s=None, scheduled_s=None):
    stats = types.SimpleNamespace(time_to_first_tokens_iter=[], num_generation_tokens=0,
                                  prompt_token_stats=types.SimpleNamespace(computed=0))
    if end_s is not None:
        stats.carbonspan_end_s = end_s
    if scheduled_s is not None:
        stats.carbonspan_scheduled_s = scheduled_s
    return stats


def test_step_window_ends_at_the_engine_output_and_starts_at_its_schedule_after_idle():
    step = step_load(details(), iteration(end_s=1000.050, scheduled_s=1000.010), now_ns=WALL0 + 60 * MS,
                     last_ns=WALL0, busy=False, clock=CLOCK)
    assert (step.start_ns - WALL0, step.end_ns - WALL0) == (10 * MS, 50 * MS)
    assert (step.prefill_tokens, step.decode_tokens, step.prefill_requests, step.decode_requests) == (64, 3, 1, 3)


def test_busy_engine_steps_start_where_the_previous_ended():
    step = step_load(details(), iteration(end_s=1000.050), now_ns=WALL0 + 60 * MS, last_ns=WALL0 + 30 * MS,
                     busy=True, clock=CLOCK)
    assert step.start_ns == WALL0 + 30 * MS


def test_without_iteration_details_the_batch_comes_from_iteration_stats():
    stats = iteration(end_s=1000.050)
    stats.time_to_first_tokens_iter = [0.1]
    stats.num_generation_tokens = 4
    stats.prompt_token_stats.computed = 100
    step = step_load(types.SimpleNamespace(iteration_details=None, num_running_reqs=4), stats, WALL0 + 60 * MS,
                     WALL0 + 40 * MS, busy=True, clock=CLOCK)
    assert (step.prefill_tokens, step.decode_tokens, step.prefill_requests, step.decode_requests) == (100, 3, 1, 3)
    assert step_load(None, None, WALL0, WALL0, busy=False, clock=CLOCK) is None


def test_sync_kv_load_ends_when_the_next_step_is_scheduled_async_when_reported():
    clock = _TransferClock(bytes_per_token=2048, block_size=32, connector="X")
    clock.matched("sync", False)
    clock.matched("async", True)
    clock.started("sync", 96, None, 1.0)
    clock.started("async", 100, "p", 1.0)
    clock.scheduled(1.001)  # the step that loads is being scheduled
    clock.scheduled(1.020)  # the next one: the synchronous load is done
    clock.received({"async"}, 1.300)
    sync, late = clock.finished("sync", 2.0), clock.finished("async", 2.0)
    assert (sync.start_s, sync.end_s, sync.num_bytes, sync.num_blocks) == (1.0, 1.020, 96 * 2048, 3)
    assert (late.end_s, late.num_blocks, late.num_bytes, late.remote_engine) == (1.300, 4, 4 * 32 * 2048, "p")
    assert clock.finished("never", 3.0) is None


def test_proxy_keeps_the_callers_trace_and_makes_one_when_absent():
    given = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "x": "y"}
    assert trace_headers(given) == {"traceparent": given["traceparent"]}
    made = trace_headers({})["traceparent"]
    assert made.startswith("00-") and made.endswith("-01") and made != trace_headers({})["traceparent"]


def test_proxy_prefill_request_generates_one_token_and_asks_for_remote_decode():
    body = {"prompt": "w5", "max_tokens": 50, "stream": True, "stream_options": {"include_usage": True}}
    request = prefill_request(body)
    assert request["max_tokens"] == 1 and request["stream"] is False and "stream_options" not in request
    assert request["kv_transfer_params"]["do_remote_decode"] is True
    assert body["max_tokens"] == 50


def test_resource_precedence_discovered_then_otel_env_then_carbonspan_env(monkeypatch):
    monkeypatch.delenv("CARBONSPAN_GPU_IDS", raising=False)
    monkeypatch.delenv("CARBONSPAN_ROLE", raising=False)
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "cloud.region=eu-west-1,service.instance.id=w7")
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    res = worker_resource("decode")
    assert res[semconv.SERVICE_NAME] == "decode" and res[semconv.CLOUD_REGION] == "eu-west-1"
    assert res[semconv.SERVICE_INSTANCE_ID] == "w7"
    cpu_id = list(res[semconv.CARBON_GPU_IDS])
    assert len(cpu_id) == 1 and cpu_id[0].startswith("CPU-") and worker_resource("decode")[
        semconv.CARBON_GPU_IDS] == res[semconv.CARBON_GPU_IDS]
    monkeypatch.setenv("OTEL_SERVICE_NAME", "my-decoder")
    monkeypatch.setenv("CARBONSPAN_GPU_IDS", "GPU-a, GPU-b")
    monkeypatch.setenv("CARBONSPAN_CLOUD_REGION", "us-west-2")
    res = worker_resource("decode")
    assert res[semconv.SERVICE_NAME] == "my-decoder"
    assert list(res[semconv.CARBON_GPU_IDS]) == ["GPU-a", "GPU-b"] and res[semconv.CLOUD_REGION] == "us-west-2"
