"""Config loading: the Collector's schema, env substitution, and errors that say key and line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from collector_doubles import EXPORTERS

from carbonspan.collector.config import load_config_text
from carbonspan.collector.errors import ConfigError

BASE = """\
extensions:
  file_storage/q: {directory: /var/lib/carbonspan}
receivers:
  otlp:
    protocols:
      grpc: {endpoint: "${env:GRPC_ENDPOINT:-127.0.0.1:4317}"}
      http:
        max_request_body_size: ${env:BODY}
processors:
  carbon:
    policy: tokens
    deadline: 3s
    counterfactual_regions: [gcp/europe-north1]
    intensity: {provider: table, region_zones: {eu-north-1: SE-SE3}}
    facility: {pue: {default: 1.3}}
  carbon_rollup: {settle: 1s}
  batch: {}
exporters:
  recording/out:
    sending_queue: {storage: file_storage/q}
service:
  pipelines:
    traces: {receivers: [otlp], processors: [carbon, carbon_rollup, batch], exporters: [recording/out]}
    metrics: {receivers: [otlp], processors: [carbon], exporters: [recording/out]}
"""


def load(text: str, env: dict | None = None):
    return load_config_text(text, env if env is not None else {"BODY": "1048576"}, source="test.yaml",
                            exporter_types=EXPORTERS)


def error_of(text: str, env: dict | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(text, env)
    return info.value


def test_schema_env_defaults_and_typed_substitution():
    config = load(BASE)
    grpc = config.receivers["otlp"].settings.grpc
    http = config.receivers["otlp"].settings.http
    assert (grpc.host, grpc.port) == ("127.0.0.1", 4317)
    assert http.max_bytes == 1048576 and (http.host, http.port) == ("127.0.0.1", 4318)
    carbon = config.processors["carbon"].settings
    assert carbon.join.deadline_ns == 3 * 10**9
    assert carbon.join.counterfactual_regions == (("gcp", "europe-north1"),)
    assert config.pipelines["metrics"].processors == ("carbon",)
    other = load(BASE, {"GRPC_ENDPOINT": "0.0.0.0:9999", "BODY": "10"})
    assert other.receivers["otlp"].settings.grpc.port == 9999


def test_file_storage_becomes_a_directory_per_exporter():
    queue = load(BASE).exporters["recording/out"].settings.config["sending_queue"]
    assert queue == {"storage_directory": "/var/lib/carbonspan/recording_out"}


@pytest.mark.parametrize("change, key, line", [
    (("policy: tokens", "policy: watts"), "processors.carbon.policy", 11),
    (("deadline: 3s", "deadlin: 3s"), "processors.carbon.deadlin", 12),
    (("carbon_rollup: {settle: 1s}", "carbon_rollup: {settle: soon}"), "processors.carbon_rollup.settle", 16),
    (("batch: {}", "batchy: {}"), "processors.batchy", 17),
    (("exporters: [recording/out]}\n    metrics", "exporters: [recording/nope]}\n    metrics"),
     "service.pipelines.traces.exporters[0]", 23),
    (("region_zones: {eu-north-1: SE-SE3}", "region_zone: {}"), "processors.carbon.intensity.region_zone", 14),
    (("pue: {default: 1.3}", "pue: {default: 0.5}"), "processors.carbon.facility.pue.default", 15),
    (("grpc: {endpoint", "grpc: {endpointt"), "receivers.otlp.protocols.grpc.endpointt", 6),
    (("storage: file_storage/q", "storage: file_storage/x"), "exporters.recording/out.sending_queue.storage", 20),
])
def test_errors_name_the_key_and_its_line(change, key, line):
    error = error_of(BASE.replace(*change))
    assert error.key == key
    assert error.line == line
    assert str(error).startswith(f"test.yaml:{line}: {key}: ")


def test_unset_env_without_default_leaves_the_key_absent_and_is_reported_where_required():
    error = error_of(BASE.replace("token: x", "").replace(
        "extensions:\n", "extensions:\n  bearertokenauth: {token: \"${env:TOKEN}\"}\n"), {"BODY": "1"})
    assert error.key == "extensions.bearertokenauth.token" and error.line == 2


def test_carbon_cannot_serve_two_traces_pipelines():
    text = BASE.replace("    metrics: {", "    traces/2: {receivers: [otlp], processors: [carbon], "
                                         "exporters: [recording/out]}\n    metrics: {")
    error = error_of(text)
    assert error.key == "service.pipelines.traces/2.processors[0]"


def test_bad_yaml_says_where():
    error = error_of("receivers:\n  otlp: [\n")
    assert error.line is not None and "YAML" in error.message


ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted(str(p) for p in [ROOT / "otel-config.yaml", *(ROOT / "examples").glob("*.yaml")]
                 if p.exists() and "otelcol" not in p.name)


@pytest.mark.parametrize("path", SHIPPED)
def test_shipped_configs_validate(path):
    result = subprocess.run([sys.executable, "-m", "carbonspan.collector.cli", "validate", "--config", path],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("OK")


def test_validate_cli_prints_file_line_and_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(BASE.replace("deadline: 3s", "deadline: 3 seconds").replace("recording/out", "debug"))
    result = subprocess.run([sys.executable, "-m", "carbonspan.collector.cli", "validate", "--config", str(bad)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert f"{bad}:12: processors.carbon.deadline:" in result.stderr


def test_loadbalancing_example_routes_traces_by_trace_id_to_the_gateways():
    import yaml

    config = yaml.safe_load((ROOT / "examples" / "otelcol-loadbalancing.yaml").read_text())
    traces = config["service"]["pipelines"]["traces"]
    (exporter,) = traces["exporters"]
    assert exporter.startswith("loadbalancing") and config["exporters"][exporter]["routing_key"] == "traceID"
    gateway = yaml.safe_load((ROOT / "examples" / "gateway.yaml").read_text())
    port = gateway["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"].rsplit(":", 1)[1].rstrip("}")
    assert str(config["exporters"][exporter]["resolver"]["dns"]["port"]) == port
