"""prometheus exporter: names per OTel's Prometheus compatibility rules, scraped over real HTTP, and
a real Prometheus server that scrapes it and answers PromQL."""

from __future__ import annotations

import json
import shutil
import subprocess
import time

import pytest
import requests
from exporters_support import free_port, wait_for
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    NumberDataPoint,
    ResourceMetrics,
    Sum,
)
from otlp_data import T0, resource
from prometheus_client.parser import text_string_to_metric_families

from carbonspan.collector.errors import ConfigError
from carbonspan.collector.exporters import EXPORTER_TYPES
from carbonspan.collector.exporters.prometheus_names import metric_name
from carbonspan.processors import semconv
from carbonspan.processors.otlp import set_attributes

CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
DELTA = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA

#: how carbonspan emits each metric that has a Prometheus name: Prometheus type and UCUM unit
EMITTED = {
    semconv.METRIC_REQUEST_CO2E: ("histogram", semconv.UNIT_GRAM),
    semconv.METRIC_REQUEST_ENERGY: ("histogram", semconv.UNIT_JOULE),
    semconv.METRIC_GPU_ATTRIBUTED_ENERGY: ("counter", semconv.UNIT_JOULE),
    semconv.METRIC_GPU_IDLE_ENERGY: ("counter", semconv.UNIT_JOULE),
    semconv.METRIC_GPU_MEASURED_ENERGY: ("counter", semconv.UNIT_JOULE),
    semconv.METRIC_GPU_LAST_SAMPLE: ("gauge", semconv.UNIT_SECOND),
    semconv.METRIC_GRID_INTENSITY: ("gauge", semconv.UNIT_INTENSITY),
    semconv.METRIC_SPAN_ENERGY: ("counter", semconv.UNIT_JOULE),
    semconv.METRIC_SPAN_CO2E: ("counter", semconv.UNIT_GRAM),
    semconv.METRIC_SPAN_TOKENS: ("counter", semconv.UNIT_TOKEN),
    semconv.METRIC_COLLECTOR_SPANS_RECEIVED: ("counter", semconv.UNIT_SPAN),
    semconv.METRIC_COLLECTOR_SPANS_EXPORTED: ("counter", semconv.UNIT_SPAN),
    semconv.METRIC_COLLECTOR_SPANS_FLAGGED: ("counter", semconv.UNIT_SPAN),
    semconv.METRIC_COLLECTOR_SPANS_LATE: ("counter", semconv.UNIT_SPAN),
    semconv.METRIC_COLLECTOR_METRIC_POINTS_RECEIVED: ("counter", "{point}"),
    semconv.METRIC_COLLECTOR_REJECTED: ("counter", "{request}"),
    semconv.METRIC_COLLECTOR_QUEUE_SIZE: ("gauge", "{request}"),
    semconv.METRIC_COLLECTOR_SPANS_PENDING: ("gauge", semconv.UNIT_SPAN),
}
REGION = {semconv.CLOUD_REGION: "eu-north-1", semconv.GEN_AI_REQUEST_MODEL: "tiny-llama"}
BOUNDS = [0.1, 0.5, 1.0, 5.0]


def number(value: float, t: int = T0, attrs: dict | None = None) -> NumberDataPoint:
    point = NumberDataPoint(time_unix_nano=t, start_time_unix_nano=T0 - 10**9, as_double=value)
    set_attributes(point.attributes, attrs if attrs is not None else REGION)
    return point


def histogram_point(counts: list[int], total: float, t: int = T0) -> HistogramDataPoint:
    point = HistogramDataPoint(time_unix_nano=t, start_time_unix_nano=T0 - 10**9, count=sum(counts), sum=total,
                               explicit_bounds=BOUNDS, bucket_counts=counts)
    set_attributes(point.attributes, REGION)
    return point


def metric(name: str, kind: str, unit: str, *, value: float = 1.0, counts: list[int] | None = None,
           temporality: int = CUMULATIVE, t: int = T0) -> Metric:
    if kind == "histogram":
        data = Histogram(aggregation_temporality=temporality,
                         data_points=[histogram_point(counts or [1, 2, 3, 4, 0], value, t)])
        return Metric(name=name, unit=unit, histogram=data)
    if kind == "counter":
        return Metric(name=name, unit=unit, sum=Sum(aggregation_temporality=temporality, is_monotonic=True,
                                                    data_points=[number(value, t)]))
    return Metric(name=name, unit=unit, gauge=Gauge(data_points=[number(value, t)]))


def request(*metrics: Metric, res: dict | None = None) -> ExportMetricsServiceRequest:
    rm = ResourceMetrics(resource=resource(res or {semconv.SERVICE_NAME: "carbonspan",
                                                  semconv.SERVICE_INSTANCE_ID: "gw-1"}))
    rm.scope_metrics.add().metrics.extend(metrics)
    return ExportMetricsServiceRequest(resource_metrics=[rm])


@pytest.fixture
def exporter():
    started = []

    def make(**config):
        exp = EXPORTER_TYPES["prometheus"]("prometheus", {"endpoint": "127.0.0.1:0", **config})
        exp.start()
        started.append(exp)
        return exp

    yield make
    for exp in started:
        exp.shutdown(2)


def scrape(exp) -> dict[str, list]:
    """sample name -> samples, as a Prometheus client library parses the exposition."""
    host, port = exp.address
    text = requests.get(f"http://{host}:{port}/metrics", timeout=5).text
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def test_every_carbonspan_metric_gets_its_documented_prometheus_name(exporter):
    assert set(EMITTED) == set(semconv.PROMETHEUS_NAMES)
    for name, (kind, unit) in EMITTED.items():
        assert metric_name(name, unit, kind) == semconv.PROMETHEUS_NAMES[name], name

    exp = exporter()
    exp.export_metrics(request(*(metric(name, kind, unit) for name, (kind, unit) in EMITTED.items())))
    samples = scrape(exp)
    for name, (kind, _) in EMITTED.items():
        prom = semconv.PROMETHEUS_NAMES[name]
        assert (f"{prom}_bucket" if kind == "histogram" else prom) in samples, prom


def test_name_conversion_rules():
    assert metric_name("http.server.request.duration", "s", "histogram") == "http_server_request_duration_seconds"
    assert metric_name("net.io", "By/s", "gauge") == "net_io_bytes_per_second"
    assert metric_name("gpu.utilization", "1", "gauge") == "gpu_utilization_ratio"
    assert metric_name("carbon.energy.joules", "J", "counter") == "carbon_energy_joules_total"
    assert metric_name("requests", "{request}", "counter", namespace="cs") == "cs_requests_total"
    assert metric_name("2xx.count", "", "gauge") == "_2xx_count"
    assert metric_name("hw.energy", "J", "counter", add_suffixes=False) == "hw_energy"


def test_labels_values_and_latest_cumulative_point(exporter):
    exp = exporter(const_labels={"cluster": "c1"})
    co2e = semconv.METRIC_SPAN_CO2E
    exp.export_metrics(request(metric(co2e, "counter", "g", value=5.0, t=T0 + 2)))
    exp.export_metrics(request(metric(co2e, "counter", "g", value=3.0, t=T0 + 1)))  # older: ignored
    [sample] = scrape(exp)["carbon_span_co2e_grams_total"]
    assert sample.value == 5.0
    assert sample.labels == {"cloud_region": "eu-north-1", "gen_ai_request_model": "tiny-llama", "cluster": "c1",
                             "job": "carbonspan", "instance": "gw-1"}
    exp.export_metrics(request(metric(co2e, "counter", "g", value=9.0, t=T0 + 3)))
    assert scrape(exp)["carbon_span_co2e_grams_total"][0].value == 9.0


def test_delta_sums_and_histograms_accumulate(exporter):
    exp = exporter()
    for _ in range(3):
        exp.export_metrics(request(
            metric(semconv.METRIC_SPAN_TOKENS, "counter", semconv.UNIT_TOKEN, value=10, temporality=DELTA),
            metric(semconv.METRIC_REQUEST_CO2E, "histogram", "g", value=2.5, counts=[1, 0, 1, 0, 0],
                   temporality=DELTA)))
    samples = scrape(exp)
    assert samples["carbon_span_tokens_total"][0].value == 30
    buckets = {s.labels["le"]: s.value for s in samples["carbon_request_co2e_grams_bucket"]}
    assert buckets == {"0.1": 3, "0.5": 3, "1.0": 6, "5.0": 6, "+Inf": 6}
    assert samples["carbon_request_co2e_grams_sum"][0].value == 7.5
    assert samples["carbon_request_co2e_grams_count"][0].value == 6


def test_resource_attributes_as_labels_and_expiry(exporter):
    exp = exporter(resource_to_telemetry_conversion={"enabled": True}, metric_expiration="1s")
    res = {semconv.SERVICE_NAME: "decode", semconv.HOST_NAME: "node-7", semconv.CARBON_GPU_IDS: ["GPU-a", "GPU-b"]}
    exp.export_metrics(request(metric(semconv.METRIC_GRID_INTENSITY, "gauge", semconv.UNIT_INTENSITY, value=42),
                               res=res))
    [sample] = scrape(exp)["carbon_grid_intensity_gco2e_per_kwh"]
    assert sample.labels["host_name"] == "node-7" and sample.labels["job"] == "decode"
    assert json.loads(sample.labels["carbon_gpu_ids"]) == ["GPU-a", "GPU-b"]
    time.sleep(1.2)
    assert "carbon_grid_intensity_gco2e_per_kwh" not in scrape(exp)


@pytest.mark.parametrize("config, key", [({"endpoint": "8889"}, "endpoint"), ({"metric_expiration": "soon"},
                                         "metric_expiration"), ({"send_timestamp": True}, "send_timestamp")])
def test_config_errors(config, key):
    with pytest.raises(ConfigError) as error:
        EXPORTER_TYPES["prometheus"]("prometheus", config)
    assert error.value.key == key


@pytest.mark.prometheus
def test_real_prometheus_scrapes_and_answers_promql(exporter, tmp_path):
    binary = shutil.which("prometheus") or "/usr/bin/prometheus"
    exp = exporter()
    # 100 requests: 10 under 0.1 g, 60 in (0.1, 0.5], 20 in (0.5, 1], 10 in (1, 5]
    exp.export_metrics(request(
        metric(semconv.METRIC_REQUEST_CO2E, "histogram", semconv.UNIT_GRAM, value=48.0, counts=[10, 60, 20, 10, 0]),
        metric(semconv.METRIC_SPAN_CO2E, "counter", semconv.UNIT_GRAM, value=48.0),
        metric(semconv.METRIC_GPU_MEASURED_ENERGY, "counter", semconv.UNIT_JOULE, value=1.5e6)))
    host, port = exp.address
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"scrape_configs:\n  - job_name: carbonspan\n    static_configs: [{{targets: ['{host}:{port}']}}]\n")
    web = f"127.0.0.1:{free_port()}"
    process = subprocess.Popen(
        [binary, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address={web}"], stdout=subprocess.DEVNULL, stderr=(tmp_path / "prometheus.log").open("w"))
    try:
        def query(promql: str) -> list:
            try:
                answer = requests.get(f"http://{web}/api/v1/query", params={"query": promql}, timeout=2).json()
            except requests.RequestException:
                return []
            return answer.get("data", {}).get("result", [])

        p95 = "histogram_quantile(0.95, sum by (le) (carbon_request_co2e_grams_bucket))"
        assert wait_for(lambda: query(p95), 60), (tmp_path / "prometheus.log").read_text()[-2000:]
        # rank 95 of 100 falls in (1, 5], which holds requests 91..100: 1 + 4 * (95 - 90) / 10
        assert float(query(p95)[0]["value"][1]) == pytest.approx(3.0)
        [total] = query("sum(carbon_span_co2e_grams_total)")
        assert float(total["value"][1]) == 48.0
        [energy] = query('carbon_gpu_measured_energy_joules_total{cloud_region="eu-north-1"}')
        assert float(energy["value"][1]) == 1.5e6
        assert energy["metric"]["exported_job"] == "carbonspan" and energy["metric"]["job"] == "carbonspan"
    finally:
        process.terminate()
        process.wait(timeout=30)
