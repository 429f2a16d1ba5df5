"""A real aggregated vLLM engine on CPU (in-process, tiny model, dummy weights) with the carbonspan
stat logger: per-request phase spans against vLLM's own RequestOutput metrics, and the worker
load counters against what the requests computed."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from vllm_harness import OtlpSink

from carbonspan.instrumentation.otlp_push import OtlpMetricsSender
from carbonspan.instrumentation.vllm import launch
from carbonspan.processors import semconv

pytestmark = pytest.mark.vllm

N = 4
PROMPT_LEN = [20, 33, 47, 64]
MAX_TOKENS = [5, 9, 12, 16]


def traceparent(i: int) -> tuple[int, int, str]:
    trace_id, span_id = 0x1000 + i, 0x2000 + i
    return trace_id, span_id, f"00-{trace_id:032x}-{span_id:016x}-01"


@pytest.fixture(scope="module")
def engine_run(tmp_path_factory):
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    patch = pytest.MonkeyPatch()
    patch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    patch.setenv("CARBONSPAN_VLLM", "1")
    patch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
    patch.setenv("CARBONSPAN_GPU_IDS", "GPU-aggregated-0")
    model = launch.tiny_model(tmp_path_factory.mktemp("model"))
    spans = InMemorySpanExporter()
    with OtlpSink() as sink:
        engine = launch.start_engine(launch.engine_kwargs(model, sink.endpoint), span_exporter=spans,
                                     metrics_sender=OtlpMetricsSender(sink.endpoint))
        for i in range(N):
            params = SamplingParams(max_tokens=MAX_TOKENS[i], ignore_eos=True, temperature=0.0, detokenize=False)
            prompt = TokensPrompt(prompt_token_ids=[(5 * i + 7 * j) % 990 + 3 for j in range(PROMPT_LEN[i])])
            engine.add_request(f"req-{i}", prompt, params, trace_headers={"traceparent": traceparent(i)[2]})
        outputs = {}
        while engine.has_unfinished_requests():
            outputs.update((o.request_id, o) for o in engine.step() if o.finished)
        instrumentation = launch.engine_instrumentation(engine)
        instrumentation.shutdown()
        engine.engine_core.shutdown()
        trace.get_tracer_provider().force_flush()  # vLLM's own llm_request spans, before the sink stops
        yield outputs, spans.get_finished_spans(), sink, instrumentation
    patch.undo()


def test_each_request_is_a_trace_of_queue_prefill_decode_on_its_traceparent(engine_run):
    outputs, spans, _, _ = engine_run
    assert len(outputs) == N
    for i in range(N):
        trace_id, parent_id, _ = traceparent(i)
        mine = {s.name: s for s in spans if s.context.trace_id == trace_id}
        assert set(mine) == {semconv.PHASE_QUEUE, semconv.PHASE_PREFILL, semconv.PHASE_DECODE}
        for span in mine.values():
            assert span.parent.span_id == parent_id
            assert span.attributes[semconv.GEN_AI_REQUEST_ID] == f"req-{i}"
            assert span.attributes[semconv.GEN_AI_USAGE_INPUT_TOKENS] == PROMPT_LEN[i]
            assert span.attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == MAX_TOKENS[i]
            assert span.resource.attributes[semconv.SERVICE_NAME] == "aggregated"
            assert list(span.resource.attributes[semconv.CARBON_GPU_IDS]) == ["GPU-aggregated-0"]
        metrics = outputs[f"req-{i}"].metrics
        expected = {semconv.PHASE_QUEUE: metrics.scheduled_ts - metrics.queued_ts,
                    semconv.PHASE_PREFILL: metrics.first_token_ts - metrics.scheduled_ts,
                    semconv.PHASE_DECODE: metrics.last_token_ts - metrics.first_token_ts}
        for phase, seconds in expected.items():
            assert (mine[phase].end_time - mine[phase].start_time) / 1e9 == pytest.approx(seconds, abs=2e-9)
        assert mine[semconv.PHASE_QUEUE].end_time == mine[semconv.PHASE_PREFILL].start_time
        assert mine[semconv.PHASE_PREFILL].end_time == mine[semconv.PHASE_DECODE].start_time
        assert mine[semconv.PHASE_PREFILL].attributes[semconv.CARBON_TOKENS] == PROMPT_LEN[i]
        assert mine[semconv.PHASE_DECODE].attributes[semconv.CARBON_TOKENS] == MAX_TOKENS[i] - 1
        # the wall clock of the prefill end is the arrival (wall) plus vLLM's own time to first token
        first_token_wall = (metrics.arrival_time + metrics.first_token_latency) * 1e9
        assert mine[semconv.PHASE_PREFILL].end_time == pytest.approx(first_token_wall, abs=5e6)


def test_load_counters_count_what_the_requests_computed_with_a_point_at_each_step_edge(engine_run):
    _, spans, sink, instrumentation = engine_run
    series: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for rm in sink.resource_metrics:
        assert list(dict((kv.key, kv.value) for kv in rm.resource.attributes)[semconv.CARBON_GPU_IDS]
                    .array_value.values)[0].string_value == "GPU-aggregated-0"
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                for p in metric.sum.data_points:
                    phase = p.attributes[0].value.string_value
                    series.setdefault((metric.name, phase), []).append((p.time_unix_nano, p.as_double))
    tokens = series[semconv.CARBON_WORKER_TOKENS, semconv.PHASE_PREFILL]
    assert tokens[-1][1] == sum(PROMPT_LEN)
    assert series[semconv.CARBON_WORKER_TOKENS, semconv.PHASE_DECODE][-1][1] == sum(m - 1 for m in MAX_TOKENS)
    for points in series.values():
        times = [t for t, _ in points]
        assert times == sorted(times)
        assert all(b >= a for (_, a), (_, b) in zip(points, points[1:], strict=False))
    # the prefill step began after an idle spell: a flat point marks where it began
    assert tokens[0][1] == 0 and any(v == 0 for t, v in tokens[1:])
    # request-seconds: each request counts while it is in a step of that phase, and only then, so
    # they add up to the requests' own prefill and decode spans
    for phase in semconv.COMPUTE_PHASES:
        spent = sum((s.end_time - s.start_time) / 1e9 for s in spans if s.name == phase)
        assert series[semconv.CARBON_WORKER_REQUEST_TIME, phase][-1][1] == pytest.approx(spent, rel=1e-6)
    assert instrumentation.batcher.dropped_points == 0
