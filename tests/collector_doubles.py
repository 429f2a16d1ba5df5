"""A recording exporter for collector tests: keeps every request it is given, in order."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from carbonspan.collector.errors import ConfigError
from carbonspan.collector.exporters.base import Exporter


class RecordingExporter(Exporter):
    #: name -> instance, so a test can find the exporter its Service built from a config.
    instances: dict[str, RecordingExporter] = {}

    def __init__(self, name: str, config: Mapping[str, Any]) -> None:
        super().__init__(name, config)
        unknown = set(config) - {"sending_queue"}
        if unknown:
            raise ConfigError(sorted(unknown)[0], "unknown key")
        self.config = dict(config)
        self.traces: list = []
        self.metrics: list = []
        self.shut_down = False
        self.changed = threading.Condition()
        RecordingExporter.instances[name] = self

    def export_traces(self, request) -> None:
        with self.changed:
            self.traces.append(request)
            self.changed.notify_all()

    def export_metrics(self, request) -> None:
        with self.changed:
            self.metrics.append(request)
            self.changed.notify_all()

    def shutdown(self, timeout_s: float) -> None:
        self.shut_down = True

    def spans(self) -> list:
        with self.changed:
            return [(rs, span) for req in self.traces for rs in req.resource_spans for ss in rs.scope_spans
                    for span in ss.spans]

    def wait_for_spans(self, count: int, timeout_s: float = 10.0) -> list:
        with self.changed:
            self.changed.wait_for(lambda: sum(len(ss.spans) for r in self.traces for rs in r.resource_spans
                                              for ss in rs.scope_spans) >= count, timeout_s)
        return self.spans()


EXPORTERS = {"recording": RecordingExporter}
