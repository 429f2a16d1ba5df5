"""Exporter types by the name a config uses for them (``otlp``, ``otlp/jaeger`` -> ``otlp``)."""

from __future__ import annotations

from carbonspan.collector.exporters.base import Exporter
from carbonspan.collector.exporters.debug import DebugExporter
from carbonspan.collector.exporters.file import FileExporter
from carbonspan.collector.exporters.otlp import OtlpGrpcExporter
from carbonspan.collector.exporters.otlphttp import OtlpHttpExporter
from carbonspan.collector.exporters.prometheus import PrometheusExporter

EXPORTER_TYPES: dict[str, type[Exporter]] = {
    "otlp": OtlpGrpcExporter,
    "otlphttp": OtlpHttpExporter,
    "file": FileExporter,
    "prometheus": PrometheusExporter,
    "debug": DebugExporter,
}
