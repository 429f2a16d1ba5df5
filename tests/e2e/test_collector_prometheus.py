"""The whole path to an alert's input: OTel SDK spans and GPU energy into a running collector,
the roll-up's per-request CO2e histogram out of its prometheus exporter, scraped by a real
Prometheus and read back with PromQL under the name the dashboards use."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest
import requests
from exporters_support import free_port
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from test_collector_service import SECOND, energy_and_load, send_request_spans

from carbonspan.collector.config import load_config_text
from carbonspan.collector.service import Service
from carbonspan.processors import semconv as sc

CONFIG = """
receivers:
  otlp: {protocols: {grpc: {endpoint: 127.0.0.1:0}}}
processors:
  carbon: {deadline: 5s}
  carbon_rollup: {settle: 200ms, idle_timeout: 1s}
exporters:
  prometheus: {endpoint: 127.0.0.1:0}
  debug: {verbosity: basic}
service:
  pipelines:
    traces: {receivers: [otlp], processors: [carbon, carbon_rollup], exporters: [debug]}
    metrics: {receivers: [otlp], processors: [carbon], exporters: [prometheus]}
  telemetry: {metrics: {interval: 300ms}}
"""


@pytest.mark.prometheus
def test_prometheus_scrapes_the_per_request_co2_histogram(tmp_path):
    binary = shutil.which("prometheus") or "/usr/bin/prometheus"
    assert os.path.exists(binary), "scripts/test.sh installs Debian's prometheus package"
    service = Service(load_config_text(CONFIG, {}))
    service.start()
    web = f"127.0.0.1:{free_port()}"
    process = None
    try:
        grpc_address = service.addresses()["otlp/grpc"]
        t0 = time.time_ns() - 30 * SECOND
        OTLPMetricExporter(endpoint=grpc_address, insecure=True).export(energy_and_load(t0, "worker-p"))
        send_request_spans(OTLPSpanExporter(endpoint=grpc_address, insecure=True), t0, "worker-p", 4)
        (tmp_path / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s}\nscrape_configs:\n  - job_name: carbonspan\n"
            f"    static_configs: [{{targets: ['{service.addresses()['prometheus']}']}}]\n")
        process = subprocess.Popen(
            [binary, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'data'}",
             f"--web.listen-address={web}"], stdout=subprocess.DEVNULL,
            stderr=(tmp_path / "prometheus.log").open("w"))
        histogram = sc.PROMETHEUS_NAMES[sc.METRIC_REQUEST_CO2E]
        query = f'sum by (gen_ai_request_model) ({histogram}_count{{service_name="vllm-prefill"}})'
        result = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                result = requests.get(f"http://{web}/api/v1/query", params={"query": query},
                                      timeout=2).json()["data"]["result"]
            except (requests.RequestException, KeyError, ValueError):
                result = []
            if result and float(result[0]["value"][1]) == 4:
                break
            time.sleep(0.5)
        assert result, (tmp_path / "prometheus.log").read_text()[-2000:]
        assert result[0]["metric"]["gen_ai_request_model"] == "tiny-llama"
        assert float(result[0]["value"][1]) == 4
        p50 = f"histogram_quantile(0.5, sum by (le) (rate({histogram}_bucket[1m])))"
        answer = requests.get(f"http://{web}/api/v1/query", params={"query": f"{histogram}_sum"}, timeout=5).json()
        assert float(answer["data"]["result"][0]["value"][1]) > 0
        assert requests.get(f"http://{web}/api/v1/query", params={"query": p50}, timeout=5).json()["status"] == \
            "success"
    finally:
        if process is not None:
            process.terminate()
            process.wait(30)
        service.shutdown(5)
