"""``file``: every request as one line of OTLP/JSON, as the Collector's file exporter writes it
(``path``; ``format: json`` only). Each line is flushed as it is written, so a reader (``carbonspan
report``, ``tail -f``, a test) sees whole requests and a crash loses at most the line being written."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from google.protobuf.message import Message
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from carbonspan.collector import otlp_json
from carbonspan.collector.config_values import Section
from carbonspan.collector.errors import ConfigError
from carbonspan.collector.exporters.base import Exporter


class FileExporter(Exporter):
    def __init__(self, name: str, config: Mapping[str, Any]) -> None:
        super().__init__(name, config)
        section = Section(config)
        path = section.string("path")
        if not path:
            raise ConfigError(section.key("path"), "required: the file to append OTLP/JSON lines to")
        section.choice("format", ("json",), "json")
        section.check_unknown()
        self.path = Path(path)
        self._lock = threading.Lock()
        self._file = None
        self._lines = 0

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - open until shutdown

    def export_traces(self, request: ExportTraceServiceRequest) -> None:
        self._write(request)

    def export_metrics(self, request: ExportMetricsServiceRequest) -> None:
        self._write(request)

    def _write(self, request: Message) -> None:
        line = otlp_json.dumps(request) + "\n"
        with self._lock:
            if self._file is None:
                raise RuntimeError(f"{self.name}: export before start or after shutdown")
            self._file.write(line)
            self._file.flush()
            self._lines += 1

    def shutdown(self, timeout_s: float) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def stats(self) -> Mapping[str, int]:
        with self._lock:
            return {"sent": self._lines, "failed": 0, "retried": 0}
