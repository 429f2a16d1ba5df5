"""The demo's overrides of the default collector config, and its argument checks."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from carbonspan.collector.cli import main
from carbonspan.collector.demo.command import VLLM_MISSING, export_endpoint
from carbonspan.collector.demo.config import (
    EXPORT_ID,
    REPORT_FILTER_ID,
    REPORT_PIPELINE_ID,
    default_config_path,
    demo_config,
)

REGIONS = ["aws/us-east-1", "gcp/europe-north1"]


def test_demo_config_changes_only_ports_output_counterfactuals_and_export(tmp_path: Path) -> None:
    demo = demo_config(tmp_path, REGIONS, "127.0.0.1:14317", environ={})
    config = demo.collector
    assert demo.traces_file.parent == tmp_path
    assert config.exporters["file"].settings.config["path"] == str(demo.traces_file)
    receiver = config.receivers["otlp"].settings
    assert (receiver.grpc.port, receiver.http.port, config.extensions["health_check"].settings.port) == (0, 0, 0)
    assert config.exporters["prometheus"].settings.config["endpoint"].endswith(":0")
    carbon = config.processors["carbon"].settings.join
    assert carbon.counterfactual_regions == (("aws", "us-east-1"), ("gcp", "europe-north1"))
    assert config.pipelines["traces"].exporters == ("file", EXPORT_ID)
    assert config.pipelines["metrics"].exporters == ("prometheus",)
    report = config.pipelines[REPORT_PIPELINE_ID]  # the file gets the collector's own metrics, not the 10 Hz series
    assert (report.receivers, report.processors, report.exporters) == (("otlp",), (REPORT_FILTER_ID,), ("file",))
    assert not config.processors[REPORT_FILTER_ID].settings.keeps("hw.energy")
    assert config.exporters[EXPORT_ID].settings.config == {"endpoint": "127.0.0.1:14317", "tls": {"insecure": True}}
    # what the demo does not touch stays as the packaged default says
    assert config.processors["carbon_rollup"].type == "carbon_rollup"
    assert "policy: tokens" in default_config_path().read_text()
    assert carbon.policy == "tokens"


def test_without_export_the_traces_go_to_the_file_only(tmp_path: Path) -> None:
    assert demo_config(tmp_path, REGIONS, environ={}).collector.pipelines["traces"].exporters == ("file",)


@pytest.mark.parametrize(("value", "endpoint"), [("otlp://jaeger:4317", "jaeger:4317"),
                                                 ("127.0.0.1:4317", "127.0.0.1:4317")])
def test_export_endpoint(value: str, endpoint: str) -> None:
    assert export_endpoint(value) == endpoint


@pytest.mark.parametrize("value", ["https://tempo:4317", "otlp://tempo", "tempo:port"])
def test_export_endpoint_rejects(value: str) -> None:
    with pytest.raises(ValueError, match="otlp://HOST:PORT"):
        export_endpoint(value)


@pytest.mark.parametrize(("argv", "message"), [
    (["--export", "tempo"], "expected otlp://HOST:PORT"),
    (["--requests", "0"], "--requests must be more than 0"),
    (["--vllm"], VLLM_MISSING),
])
def test_bad_arguments_are_refused_before_anything_starts(tmp_path: Path, capsys, monkeypatch, argv, message) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` fails, as on a machine without it
    assert main(["demo", "--out", str(tmp_path / "out"), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
