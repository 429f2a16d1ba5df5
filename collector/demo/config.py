"""The demo's collector config: the packaged default (otel-config.yaml, the same file
``carbonspan collector`` starts with) with only what a demo must change, edited in code.

- every listening port 0, so the demo never clashes with a collector already running here;
- ``file`` exporters write into the demo's output folder, and also get the collector's own metrics
  through a metrics pipeline of their own whose ``filter`` drops everything received (the report's
  idle vs attributed energy comes from the collector's ``carbon.gpu.*`` counters; the raw 10 Hz
  series would be most of the file);
- ``carbon`` processors price every span in each of the fleet's regions too (counterfactuals);
- the ``debug`` exporter and info logs are left out: the demo's stderr is its progress bar;
- ``export``: an ``otlp`` exporter (plaintext) in the traces pipelines, to Jaeger, Tempo or any OTLP peer.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from carbonspan.collector.config import CollectorConfig, load_config_text
from carbonspan.collector.errors import ConfigError

DEFAULT_CONFIG = "otel-config.yaml"
EXPORT_ID = "otlp/demo_export"
REPORT_FILTER_ID = "filter/demo_report"
REPORT_PIPELINE_ID = "metrics/demo_report"
_ANY_PORT = "127.0.0.1:0"


def default_config_path() -> Path:
    """The packaged default config (the repository's otel-config.yaml links to it)."""
    return Path(str(resources.files("carbonspan.collector").joinpath(DEFAULT_CONFIG)))


@dataclass(frozen=True)
class DemoConfig:
    collector: CollectorConfig
    #: the OTLP/JSON file the traces pipeline's file exporter writes: the report's input.
    traces_file: Path


def demo_config(out_dir: Path, regions: Iterable[str], export: str | None = None,
                environ: Mapping[str, str] = os.environ) -> DemoConfig:
    """``regions``: ``provider/region`` to price every span in; ``export``: ``host:port`` or None."""
    source = default_config_path()
    data = yaml.safe_load(source.read_text(encoding="utf-8"))
    kinds = {section: {cid: cid.split("/", 1)[0] for cid in data.get(section) or {}}
             for section in ("receivers", "processors", "exporters", "extensions")}
    for settings in (data.get("receivers") or {}).values():
        for protocol in ((settings or {}).get("protocols") or {}).values():
            if protocol is not None:
                protocol["endpoint"] = _ANY_PORT
    for cid, kind in kinds["extensions"].items():
        if kind == "health_check":
            _set(data["extensions"], cid, "endpoint", _ANY_PORT)
    files = {}
    for cid, kind in kinds["exporters"].items():
        if kind == "prometheus":
            _set(data["exporters"], cid, "endpoint", _ANY_PORT)
        elif kind == "file":
            files[cid] = out_dir / f"{cid.replace('/', '-')}-traces.jsonl"
            _set(data["exporters"], cid, "path", str(files[cid]))
    for cid, kind in kinds["processors"].items():
        if kind == "carbon":
            _set(data["processors"], cid, "counterfactual_regions", list(regions))
    if export is not None:
        data["exporters"][EXPORT_ID] = {"endpoint": export, "tls": {"insecure": True}}
    traces_files = []
    pipelines = data["service"]["pipelines"]
    metrics_receivers = None
    for pipeline_id, pipeline in pipelines.items():
        exporters = [e for e in pipeline.get("exporters") or [] if kinds["exporters"].get(e) != "debug"]
        if pipeline_id.split("/", 1)[0] == "traces":
            traces_files += [files[e] for e in exporters if e in files]
            if export is not None:
                exporters.append(EXPORT_ID)
        elif metrics_receivers is None:
            metrics_receivers = pipeline.get("receivers")
        pipeline["exporters"] = exporters
    if metrics_receivers and files:
        # The collector's own metrics go to every metrics pipeline's exporters: this pipeline drops
        # what it receives (the 10 Hz energy and load series, ~90 % of a simulated demo's bytes)
        # and so hands the files only the collector's own (carbon.gpu.* ...), which the report reads.
        data["processors"][REPORT_FILTER_ID] = {"metrics": {"exclude": {"match_type": "regexp",
                                                                        "metric_names": [".*"]}}}
        pipelines[REPORT_PIPELINE_ID] = {"receivers": metrics_receivers, "processors": [REPORT_FILTER_ID],
                                         "exporters": list(files)}
    data["service"].setdefault("telemetry", {}).setdefault("logs", {})["level"] = "warn"
    if not traces_files:
        raise ConfigError("service.pipelines", "the demo reads its report from a file exporter in a traces "
                                               "pipeline, and the default config has none", source=str(source))
    text = yaml.safe_dump(data, sort_keys=False)
    return DemoConfig(load_config_text(text, environ, source=f"{source} (with the demo's overrides)"),
                      traces_files[0])


def _set(section: dict[str, Any], component_id: str, key: str, value: Any) -> None:
    section[component_id] = {**(section[component_id] or {}), key: value}
