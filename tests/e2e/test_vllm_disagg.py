"""Disaggregated serving on CPU: a prefill API server and a decode API server (ExampleConnector
wrapped by the carbonspan connector), the carbonspan proxy in front, a real OTLP receiver behind.
One request -> one trace: prefill on the prefill engine's resource, kv_transfer and decode on the
decode engine's; then the spans, the engines' load counters and simulated GPU energy go through
the carbon join and come out priced."""

from __future__ import annotations

import asyncio
import socket
import time

import aiohttp
import pytest
from aiohttp import web
from otlp_data import SECOND, all_spans, energy_metrics, ramp
from vllm_harness import OtlpSink

from carbonspan.instrumentation.vllm import launch
from carbonspan.instrumentation.vllm.proxy import DisaggProxy
from carbonspan.processors import semconv
from carbonspan.processors.facility import FacilityTables
from carbonspan.processors.intensity import StaticTableProvider
from carbonspan.processors.join import CarbonJoin, JoinSettings
from carbonspan.processors.otlp import attributes_to_dict

pytestmark = pytest.mark.vllm

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
GPUS = {"prefill": "GPU-11111111-prefill", "decode": "GPU-22222222-decode"}
REGIONS = {"prefill": "us-east-1", "decode": "eu-west-1"}
#: disjoint cores per engine (docs/vllm.md: a NIXL engine's UCX progress thread spins on its core)
CORES = {"prefill": "0", "decode": "1"}
EXPECTED_BLOCKS = {"ExampleConnector": 3, "NixlConnector": 4}
#: the wrapped class's own name (vLLM 0.32 registers NixlConnector as NixlPullConnector)
EXPECTED_CLASS = {"ExampleConnector": "ExampleConnector", "NixlConnector": "NixlPullConnector"}
#: prompt tokens the decode engine computes itself: what the connector did not hand over
EXPECTED_RECOMPUTED = {"ExampleConnector": 100 - 96, "NixlConnector": 0}


async def through_proxy(prefill_url: str, decode_url: str, body: dict) -> dict:
    runner = web.AppRunner(DisaggProxy(prefill_url, decode_url).app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(f"http://127.0.0.1:{port}/v1/completions", json=body,
                                    headers={"traceparent": f"00-{TRACE_ID}-{PARENT}-01"}) as response:
                assert response.status == 200, await response.text()
                return await response.json()
    finally:
        await runner.cleanup()


def phase_spans(sink: OtlpSink) -> list[tuple[dict, object]]:
    return [(res, span) for res, span in all_spans(sink.resource_spans)
            if span.name in semconv.PHASES]


@pytest.fixture(scope="module", params=["ExampleConnector", "NixlConnector"])
def disagg_run(request, tmp_path_factory):
    connector = request.param
    tmp = tmp_path_factory.mktemp(connector)
    model = launch.tiny_model(tmp / "model", tokenizer=True)
    storage = str(tmp / "kv")
    with OtlpSink() as sink:
        processes, urls, started = {}, {}, {}
        ports = iter(launch.free_ports(4))
        try:
            for role in ("prefill", "decode"):
                port = next(ports)
                env = launch.server_env({
                    "VLLM_NIXL_SIDE_CHANNEL_HOST": "127.0.0.1",
                    "VLLM_NIXL_SIDE_CHANNEL_PORT": str(next(ports)),
                    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": sink.endpoint,
                    "OTEL_RESOURCE_ATTRIBUTES": f"cloud.provider=aws,cloud.region={REGIONS[role]}",
                    "CARBONSPAN_GPU_IDS": GPUS[role],
                    "VLLM_CPU_OMP_THREADS_BIND": CORES[role],
                })
                argv = launch.serve_command(model, port, sink.endpoint,
                                            launch.kv_transfer_config(role, connector, storage))
                processes[role] = launch.start_server(argv, env, tmp / f"{role}.log")
                urls[role] = f"http://127.0.0.1:{port}"
            # both start at once, on disjoint cores: a NIXL engine's UCX progress thread spins on its core
            # and starves another engine bound to the same one (docs/vllm.md)
            for role in processes:
                started[role] = launch.wait_healthy(urls[role], processes[role])
            prompt = " ".join(f"w{(7 * j) % 990 + 3}" for j in range(100))
            body = {"model": model, "prompt": prompt, "max_tokens": 8, "temperature": 0.0, "ignore_eos": True}
            response = asyncio.run(through_proxy(urls["prefill"], urls["decode"], body))
            deadline = time.monotonic() + 70  # the engines' export timeout (launch.server_env) and then some
            while time.monotonic() < deadline and len(phase_spans(sink)) < 5:
                time.sleep(0.2)
        finally:
            for process in processes.values():
                launch.stop_server(process)
        yield sink, response, started, connector


def test_one_request_is_one_trace_across_prefill_and_decode_engines(disagg_run):
    sink, response, started, connector = disagg_run
    assert len(response["choices"][0]["text"].split()) == 8
    spans = phase_spans(sink)
    by_phase: dict[str, list] = {}
    for res, span in spans:
        assert span.trace_id.hex() == TRACE_ID
        assert span.parent_span_id.hex() == PARENT
        by_phase.setdefault(span.name, []).append((res, span))
    # a prefill span on each engine (the decode engine's covers what it recomputed); the two engines
    # export independently, so their order at the sink is not fixed
    assert sorted(res[semconv.SERVICE_NAME] for res, _ in by_phase["prefill"]) == ["decode", "prefill"]
    # the decode engine recomputes what the connector could not load (the last partial block)
    (decode_res, decode_span), = by_phase["decode"]
    (kv_res, kv_span), = by_phase["kv_transfer"]
    assert decode_res[semconv.SERVICE_NAME] == kv_res[semconv.SERVICE_NAME] == "decode"
    assert list(kv_res[semconv.CARBON_GPU_IDS]) == [GPUS["decode"]]
    assert kv_res[semconv.CLOUD_REGION] == REGIONS["decode"]
    kv_attrs = attributes_to_dict(kv_span.attributes)
    # 100-token prompt, 32-token blocks, a block of one layer = 32 tokens x (K+V) x 4 heads x 32 dims x 4 bytes
    # = 32768 bytes (NIXL's own remote_block_len). ExampleConnector hands over the 3 full blocks
    # (96 tokens), NIXL all 4 blocks (the prefill engine keeps the partial last one).
    blocks = EXPECTED_BLOCKS[connector]
    assert kv_attrs[semconv.CARBON_KV_BLOCKS] == blocks
    assert kv_attrs[semconv.CARBON_KV_BYTES] == blocks * 2 * 32768
    assert kv_attrs[semconv.CARBON_KV_CONNECTOR] == EXPECTED_CLASS[connector]
    assert kv_span.end_time_unix_nano > kv_span.start_time_unix_nano
    decode_prefill = next(span for res, span in by_phase["prefill"] if res[semconv.SERVICE_NAME] == "decode")
    assert attributes_to_dict(decode_prefill.attributes)[semconv.CARBON_TOKENS] == EXPECTED_RECOMPUTED[connector]
    first_prefill = next(span for res, span in by_phase["prefill"] if res[semconv.SERVICE_NAME] == "prefill")
    assert attributes_to_dict(first_prefill.attributes)[semconv.CARBON_TOKENS] == 100
    assert first_prefill.end_time_unix_nano <= kv_span.start_time_unix_nano
    assert attributes_to_dict(decode_span.attributes)[semconv.CARBON_TOKENS] == 7
    if connector == "NixlConnector":
        assert kv_attrs[semconv.CARBON_KV_REMOTE_ENGINE]  # the prefill engine's NIXL engine id
    print(f"{connector}: engine start to healthy (s): {started}")


def test_spans_load_and_simulated_energy_come_out_of_the_join_enriched(disagg_run):
    sink, _, _, _ = disagg_run
    spans = phase_spans(sink)
    start = min(span.start_time_unix_nano for _, span in spans) - 2 * SECOND
    end = max(span.end_time_unix_nano for _, span in spans) + 2 * SECOND
    join = CarbonJoin(JoinSettings(), StaticTableProvider(), FacilityTables.default())
    load = [rm for rm in sink.resource_metrics]
    assert {m.name for rm in load for sm in rm.scope_metrics for m in sm.metrics} == {
        semconv.CARBON_WORKER_TOKENS, semconv.CARBON_WORKER_REQUEST_TIME}
    energy = [energy_metrics(GPUS[role], ramp(start, end, 100_000_000, 300.0, base=5000.0),
                             res={semconv.HOST_NAME: socket.gethostname(), semconv.CLOUD_REGION: REGIONS[role]})
              for role in GPUS]
    join.add_metrics(energy + load)
    join.add_spans(list(sink.resource_spans), now_ns=end)
    enriched = [(res, attributes_to_dict(span.attributes)) for res, span in all_spans(join.release(end, flush=True))
                if span.name in (semconv.PHASE_PREFILL, semconv.PHASE_DECODE)]
    assert len(enriched) == 3
    for res, attrs in enriched:
        # a phase that computed no token (NIXL: the decode engine's prefill) takes no share of the energy
        computed = attrs[semconv.CARBON_TOKENS] > 0
        assert (attrs[semconv.CARBON_ENERGY_JOULES] > 0) == computed, (res[semconv.SERVICE_NAME], attrs)
        assert attrs[semconv.CARBON_QUALITY] == semconv.QUALITY_MEASURED
        assert (attrs[semconv.CARBON_TOTAL_GCO2E] > 0) == computed
