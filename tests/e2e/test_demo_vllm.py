"""``carbonspan demo`` on real vLLM CPU engines: a prefill + decode pair behind the disaggregation
proxy and an aggregated engine, their simulated GPUs read by the real sampler, everything through
the collector into the file the report is made from."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_demo import _request_rows, _spans

from carbonspan.collector.cli import main
from carbonspan.collector.demo.engines import EngineError, SimulatedNode, start_engine
from carbonspan.instrumentation.simulation import default_fleet
from carbonspan.processors import semconv

pytestmark = pytest.mark.vllm

DISAGGREGATED = "prefill@us-east-1>decode@europe-north1"
AGGREGATED = "aggregated@ap-south-1"


def test_demo_prices_requests_served_by_real_vllm_engines(tmp_path: Path, capsys) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--vllm", "--requests", "4", "--top", "0", "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert "4/4 requests finished" in printed.err and "2 disaggregated, 2 aggregated" in printed.err
    assert all((out / f"engine-{role}.log").stat().st_size > 0 for role in ("prefill", "decode", "aggregated"))

    rows = _request_rows(printed.out)
    routes = sorted(row["route"] for row in rows.values())
    assert routes == [AGGREGATED] * 2 + [DISAGGREGATED] * 2, routes

    spans = _spans(out / "file-traces.jsonl")
    # the other traces are vLLM's own, of each engine's start-up: no phase, no tokens; the report
    # counts them and lists only the requests
    startup = [(r, s) for r, s in spans if s["traceId"][:12] not in rows]
    startup_traces = {s["traceId"] for _, s in startup}
    assert f"{len(startup_traces)} traces without request phases left out." in printed.out
    assert {r[semconv.SERVICE_NAME] for r, _ in startup} <= {"vllm-prefill", "vllm-decode", "vllm-aggregated"}
    assert not any(semconv.CARBON_PHASE in s["attrs"] for _, s in startup)
    compute = [(r, s) for r, s in spans if s["attrs"].get(semconv.CARBON_PHASE) in semconv.COMPUTE_PHASES]
    assert {r[semconv.SERVICE_NAME] for r, _ in compute} == {"prefill", "decode", "aggregated"}
    for resource, span in compute:
        assert span["attrs"][semconv.CARBON_ENERGY_JOULES] > 0, (resource, span["name"])
        assert span["attrs"][semconv.CARBON_QUALITY] == semconv.QUALITY_MEASURED, (resource, span["attrs"])
    transfers = [s for _, s in spans if s["name"] == semconv.PHASE_KV_TRANSFER]
    assert len(transfers) == 2
    assert all(s["attrs"][semconv.CARBON_KV_BYTES] > 0 for s in transfers)
    assert (out / "report.html").is_file() and f"HTML report: {out / 'report.html'}" in printed.out


def test_an_engine_that_cannot_start_is_named_with_its_log(tmp_path: Path) -> None:
    node = SimulatedNode(default_fleet().nodes[0])
    with pytest.raises(EngineError, match="the prefill vLLM engine did not start") as raised:
        start_engine(node, str(tmp_path / "no-such-model"), "http://127.0.0.1:9", tmp_path, str(tmp_path / "kv"))
    log = tmp_path / "engine-prefill.log"
    assert str(log) in str(raised.value) and log.stat().st_size > 0
