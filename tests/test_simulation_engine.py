"""The simulated fleet: its ground truth conserves energy, its spans have the vLLM plugin's
shapes, and a seed makes a run repeat exactly."""

from __future__ import annotations

from collections import defaultdict

import pytest

from carbonspan.instrumentation.simulation.fleet import ROLE_AGGREGATED, default_fleet, fleet_from_config
from carbonspan.instrumentation.simulation.replay import Replay, ReplaySettings
from carbonspan.instrumentation.simulation.workload import WorkloadSpec
from carbonspan.processors import semconv
from carbonspan.processors.otlp import attributes_to_dict

START = 1_700_000_000 * 10**9


def run(seed: int = 3, duration_s: float = 20.0, **settings):
    replay = Replay(settings=ReplaySettings(duration_s=duration_s, seed=seed, **settings), start_ns=START)
    batches = list(replay.batches())
    return replay, batches


def spans_of(batches):
    out = []
    for batch in batches:
        if batch.traces is None:
            continue
        for rs in batch.traces.resource_spans:
            resource = attributes_to_dict(rs.resource.attributes)
            out += [(resource, span, attributes_to_dict(span.attributes)) for ss in rs.scope_spans for span in ss.spans]
    return out


def test_requests_truth_plus_idle_is_each_gpus_energy():
    replay, batches = run()
    finished = [r for b in batches for r in b.finished]
    assert len(finished) > 30 and replay.sim.done
    per_gpu = defaultdict(float)
    for request in finished:
        for gpu, joules in request.truth_gpu_j.items():
            per_gpu[gpu] += joules
    energy, idle = replay.sim.gpu_energy_j(), replay.sim.gpu_idle_j()
    assert set(per_gpu) == set(energy)  # every GPU served someone
    for gpu, total in energy.items():
        assert idle[gpu] > 0
        assert per_gpu[gpu] + idle[gpu] == pytest.approx(total, rel=1e-9)
    for request in finished:
        assert request.truth_j == pytest.approx(sum(request.truth_phase_j.values()), rel=1e-12)
        assert set(request.truth_phase_j) == {semconv.PHASE_PREFILL, semconv.PHASE_DECODE}


def test_the_sampler_measures_what_the_gpus_drew():
    replay, batches = run(duration_s=10.0)
    last = {}
    for batch in batches:
        for request in batch.metrics:
            for rm in request.resource_metrics:
                for metric in (m for sm in rm.scope_metrics for m in sm.metrics if m.name == semconv.HW_ENERGY):
                    for point in metric.sum.data_points:
                        gpu = attributes_to_dict(point.attributes)[semconv.HW_ID]
                        last[gpu] = (point.time_unix_nano, point.as_double)
    workers = {g: w for w in replay.sim.workers.values() for g in w.gpu_ids}
    assert set(last) == set(workers)
    for gpu, (t, joules) in last.items():
        # the counter started with the sampler and lags by up to one 100 ms update
        lo = workers[gpu].timelines[gpu].energy_until(t - 100_000_000) - workers[gpu].timelines[gpu].energy_until(START)
        assert lo - 1e-6 <= joules <= workers[gpu].timelines[gpu].energy_until(t) + 1e-6


def test_spans_have_the_plugin_shapes_and_one_trace_per_request():
    replay, batches = run()
    spans = spans_of(batches)
    roots = {s.trace_id: (res, s, a) for res, s, a in spans if not s.parent_span_id}
    finished = {r.request_id: r for b in batches for r in b.finished}
    assert len(roots) == len(finished)
    by_trace = defaultdict(list)
    for res, span, attrs in spans:
        if span.parent_span_id:
            by_trace[span.trace_id].append((res, span, attrs))
    for trace_id, (root_res, root, root_attrs) in roots.items():
        request = finished[root_attrs[semconv.GEN_AI_REQUEST_ID]]
        assert semconv.CARBON_GPU_IDS not in root_res
        assert root.start_time_unix_nano == request.arrival.time_ns and root.end_time_unix_nano == request.finished_ns
        children = sorted(by_trace[trace_id], key=lambda c: (c[1].start_time_unix_nano, c[1].end_time_unix_nano))
        assert all(c[1].parent_span_id == root.span_id for c in children)
        phases = [c[2][semconv.CARBON_PHASE] for c in children]
        if request.disaggregated:
            assert [p for p in phases if p != semconv.PHASE_QUEUE] == [
                semconv.PHASE_PREFILL, semconv.PHASE_KV_TRANSFER, semconv.PHASE_DECODE]
            kv = next(c for c in children if c[2][semconv.CARBON_PHASE] == semconv.PHASE_KV_TRANSFER)
            assert kv[2][semconv.CARBON_KV_BYTES] == request.arrival.prompt_tokens * replay.fleet.kv_bytes_per_token
            assert kv[0][semconv.SERVICE_INSTANCE_ID] == request.decode_worker.node.instance
        else:
            assert phases == [semconv.PHASE_QUEUE, semconv.PHASE_PREFILL, semconv.PHASE_DECODE]
        assert phases[0] == semconv.PHASE_QUEUE
        for res, span, attrs in children:
            assert root.start_time_unix_nano <= span.start_time_unix_nano <= span.end_time_unix_nano
            assert span.end_time_unix_nano <= root.end_time_unix_nano
            assert len(res[semconv.CARBON_GPU_IDS]) == {"prefill-0": 4, "decode-0": 2, "aggregated-0": 1}[
                res[semconv.SERVICE_INSTANCE_ID]]
            if attrs[semconv.CARBON_PHASE] == semconv.PHASE_PREFILL:
                assert attrs[semconv.CARBON_TOKENS] == request.arrival.prompt_tokens
            if attrs[semconv.CARBON_PHASE] == semconv.PHASE_DECODE:
                assert attrs[semconv.CARBON_TOKENS] == request.arrival.output_tokens - 1
                assert attrs[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == request.arrival.output_tokens


def test_load_counters_add_up_to_the_spans_tokens_with_points_where_steps_begin():
    replay, batches = run(duration_s=10.0)
    spans = spans_of(batches)
    span_tokens = defaultdict(float)
    for res, _, attrs in spans:
        if attrs.get(semconv.CARBON_PHASE) in semconv.COMPUTE_PHASES:
            span_tokens[(res[semconv.SERVICE_INSTANCE_ID], attrs[semconv.CARBON_PHASE])] += attrs[semconv.CARBON_TOKENS]
    counters = {}
    times = defaultdict(list)
    for batch in batches:
        for request in batch.metrics:
            for rm in request.resource_metrics:
                instance = attributes_to_dict(rm.resource.attributes)[semconv.SERVICE_INSTANCE_ID]
                for metric in (m for sm in rm.scope_metrics for m in sm.metrics):
                    if metric.name != semconv.CARBON_WORKER_TOKENS:
                        continue
                    for point in metric.sum.data_points:
                        phase = attributes_to_dict(point.attributes)[semconv.CARBON_PHASE]
                        counters[(instance, phase)] = point.as_double
                        times[(instance, phase)].append(point.time_unix_nano)
    assert {k: v for k, v in counters.items() if v} == dict(span_tokens)
    worker = replay.sim.workers["decode-0"]
    # a point at every step boundary and heartbeats while idle: never a gap longer than the longest step
    gaps = [b - a for a, b in zip(times[("decode-0", "decode")], times[("decode-0", "decode")][1:], strict=False)]
    assert max(gaps) <= worker.heartbeat_ns + 1


def test_a_seed_repeats_the_run_and_another_seed_does_not():
    def fingerprint(seed):
        _, batches = run(seed=seed, duration_s=8.0)
        return [b.traces.SerializeToString(deterministic=True) for b in batches if b.traces] + [
            m.SerializeToString(deterministic=True) for b in batches for m in b.metrics]

    first = fingerprint(5)
    assert first == fingerprint(5)
    assert first != fingerprint(6)


def test_fleet_from_config_and_its_errors():
    fleet = fleet_from_config({"nodes": [{"name": "agg", "role": "aggregated", "gpu_model": "NVIDIA L4",
                                          "region": "eu-north-1"}], "model": "tiny"})
    assert fleet.nodes[0].model_key == "L4" and fleet.by_role(ROLE_AGGREGATED)
    with pytest.raises(ValueError, match="gpu_modl"):
        fleet_from_config({"nodes": [{"name": "a", "role": "aggregated", "gpu_model": "L4", "gpu_modl": "x"}]})
    with pytest.raises(ValueError, match="unknown GPU model"):
        fleet_from_config({"nodes": [{"name": "a", "role": "aggregated", "gpu_model": "Voodoo 2"}]})
    with pytest.raises(ValueError, match="decode node"):
        fleet_from_config({"nodes": [{"name": "a", "role": "prefill", "gpu_model": "L4"}]})
    replay = Replay(fleet, WorkloadSpec(rate_per_s=2.0), ReplaySettings(requests=5), start_ns=START)
    assert sum(len(b.finished) for b in replay.batches()) == 5
    assert len(default_fleet().nodes) == 3
