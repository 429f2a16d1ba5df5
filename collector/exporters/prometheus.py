"""``prometheus``: a /metrics endpoint that Prometheus scrapes, as the Collector's prometheus exporter.

Keys: ``endpoint`` (127.0.0.1:8889; port 0 picks one, see ``address``), ``namespace``, ``const_labels``,
``metric_expiration`` (5m: a series not updated for that long disappears), ``add_metric_suffixes``
(true), ``resource_to_telemetry_conversion.enabled`` (false: resource attributes become labels).

The exporter keeps the newest point of every series it received and prometheus_client serves them
through a custom collector at scrape time. Cumulative sums, gauges and histograms are stored as they
come; delta sums and histograms are added up into cumulative ones, as the Collector does. Labels are
the point's attributes, plus ``job`` (``service.namespace/service.name``) and ``instance``
(``service.instance.id``) from the resource. Exponential histograms, summaries and non-monotonic
deltas have no faithful Prometheus form here: they are counted and logged once per metric name.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality, Metric
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.metrics_core import Metric as PromMetric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from carbonspan.collector.config_values import Section, parse_endpoint
from carbonspan.collector.exporters import prometheus_names as names
from carbonspan.collector.exporters._counts import metric_points
from carbonspan.collector.exporters.base import Exporter
from carbonspan.processors import semconv
from carbonspan.processors.otlp import any_value_to_python, attributes_to_dict

logger = logging.getLogger(__name__)

_DELTA = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
_SERVICE_NAMESPACE = "service.namespace"  # OTel semconv; only the exporter reads it


@dataclass
class _Series:
    labels: dict[str, str]
    time_ns: int
    updated: float
    value: float = 0.0
    #: histograms: upper bounds (the last one +Inf) and cumulative counts per bound
    bounds: tuple[float, ...] = ()
    buckets: list[float] = field(default_factory=list)
    count: float = 0.0
    sum: float = 0.0


@dataclass
class _Family:
    kind: str  # counter, gauge, histogram
    help: str
    series: dict[tuple, _Series] = field(default_factory=dict)


class _Store(Collector):
    """The latest point of every series; prometheus_client calls ``collect`` on each scrape."""

    def __init__(self, expiration_s: float) -> None:
        self._families: dict[str, _Family] = {}
        self._lock = threading.Lock()
        self._expiration_s = expiration_s

    def family(self, name: str, kind: str, help_text: str) -> _Family | None:
        family = self._families.setdefault(name, _Family(kind, help_text))
        return family if family.kind == kind else None

    def update(self, family: _Family, labels: dict[str, str], time_ns: int, *, delta: bool,
               value: float = 0.0, bounds: tuple[float, ...] = (), counts: list[float] | None = None,
               count: float = 0.0, total: float = 0.0) -> None:
        key = tuple(sorted(labels.items()))
        now = time.monotonic()
        with self._lock:
            old = family.series.get(key)
            if old is not None and not delta and time_ns < old.time_ns:
                return  # an older cumulative point arriving late must not move the series back
            cumulative = [sum(counts[: i + 1]) for i in range(len(counts))] if counts is not None else []
            if delta and old is not None and old.bounds == bounds:
                value += old.value
                cumulative = [a + b for a, b in zip(cumulative, old.buckets, strict=True)]
                count += old.count
                total += old.sum
            family.series[key] = _Series(labels, max(time_ns, old.time_ns if old else 0), now, value, bounds,
                                         cumulative, count, total)

    def collect(self) -> Iterator[PromMetric]:
        cutoff = time.monotonic() - self._expiration_s
        with self._lock:
            for name, family in self._families.items():
                for key in [k for k, s in family.series.items() if s.updated < cutoff]:
                    del family.series[key]
                if family.series:
                    yield _to_prometheus(name, family)


def _to_prometheus(name: str, family: _Family) -> PromMetric:
    kind, base = family.kind, name
    if kind == "counter":
        # prometheus_client names a counter family without _total and writes _total on its samples;
        # a counter kept without the suffix (add_metric_suffixes: false) can only be exposed untyped.
        base, kind = (name[: -len("_total")], kind) if name.endswith("_total") else (name, "unknown")
    metric = PromMetric(base, family.help, kind)
    for series in family.series.values():
        if family.kind != "histogram":
            metric.add_sample(name, series.labels, series.value)
        else:
            for bound, cumulative in zip(series.bounds, series.buckets, strict=True):
                le = floatToGoString(bound)
                metric.add_sample(f"{name}_bucket", {**series.labels, "le": le}, cumulative)
            metric.add_sample(f"{name}_count", series.labels, series.count)
            metric.add_sample(f"{name}_sum", series.labels, series.sum)
    return metric


class PrometheusExporter(Exporter):
    signals = frozenset({"metrics"})

    def __init__(self, name: str, config: Mapping[str, Any]) -> None:
        super().__init__(name, config)
        section = Section(config)
        self._host, self._port = parse_endpoint(section.key("endpoint"), section.raw("endpoint", "127.0.0.1:8889"))
        self._namespace = section.string("namespace", "") or ""
        self._const_labels = {names.label_name(k): v for k, v in section.string_map("const_labels").items()}
        self._suffixes = section.boolean("add_metric_suffixes", True)
        self._resource_labels = section.section("resource_to_telemetry_conversion").boolean("enabled", False)
        expiration_s = section.seconds("metric_expiration", "5m")
        section.check_unknown()
        self._store = _Store(expiration_s)
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._unsupported: dict[str, int] = {}
        self._points = 0

    @property
    def address(self) -> tuple[str, int]:
        """Where /metrics is served (the real port when the config asked for port 0)."""
        if self._server is None:
            raise RuntimeError(f"{self.name} is not started")
        host, port = self._server.server_address[:2]
        return host, port

    def start(self) -> None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self._store)
        self._server, self._thread = start_http_server(self._port, self._host, registry)
        logger.info("%s: serving Prometheus metrics on http://%s:%d/metrics", self.name, *self.address)

    def shutdown(self, timeout_s: float) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            if self._thread is not None:
                self._thread.join(timeout_s)
            self._server = None

    def stats(self) -> Mapping[str, int]:
        return {"sent": self._points, "failed": sum(self._unsupported.values()), "retried": 0}

    def export_metrics(self, request: ExportMetricsServiceRequest) -> None:
        for rm in request.resource_metrics:
            resource = attributes_to_dict(rm.resource.attributes)
            extra = self._resource_label_values(resource)
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    self._add_metric(metric, extra)

    def _resource_label_values(self, resource: dict[str, Any]) -> dict[str, str]:
        extra = dict(self._const_labels)
        if self._resource_labels:
            extra.update(names.labels(resource.items()))
        service = resource.get(semconv.SERVICE_NAME)
        if service is not None:
            namespace = resource.get(_SERVICE_NAMESPACE)
            extra["job"] = f"{namespace}/{service}" if namespace else str(service)
        if resource.get(semconv.SERVICE_INSTANCE_ID) is not None:
            extra["instance"] = str(resource[semconv.SERVICE_INSTANCE_ID])
        return extra

    def _add_metric(self, metric: Metric, extra: dict[str, str]) -> None:
        data = metric.WhichOneof("data")
        kind = {"gauge": "gauge", "histogram": "histogram"}.get(data or "")
        delta = False
        if data == "sum":
            delta = metric.sum.aggregation_temporality == _DELTA
            kind = "counter" if metric.sum.is_monotonic else (None if delta else "gauge")
        elif data == "histogram":
            delta = metric.histogram.aggregation_temporality == _DELTA
        if kind is None:
            what = "a non-monotonic delta sum" if data == "sum" else data
            self._skip(metric, f"{what} has no Prometheus form here")
            return
        name = names.metric_name(metric.name, metric.unit, kind, namespace=self._namespace,
                                 add_suffixes=self._suffixes)
        family = self._store.family(name, kind, metric.description or metric.name)
        if family is None:
            self._skip(metric, f"{name} already exists with another type")
            return
        for point in getattr(metric, data).data_points:
            labels = {**extra, **names.labels((kv.key, any_value_to_python(kv.value)) for kv in point.attributes)}
            if kind == "histogram":
                if not point.explicit_bounds and not point.bucket_counts:
                    bounds, counts = (math.inf,), [float(point.count)]
                else:
                    bounds, counts = (*point.explicit_bounds, math.inf), [float(c) for c in point.bucket_counts]
                if len(counts) != len(bounds):
                    self._skip(metric, f"a point has {len(counts)} bucket counts for {len(bounds)} buckets")
                    continue
                self._store.update(family, labels, point.time_unix_nano, delta=delta, bounds=bounds,
                                   counts=counts, count=float(point.count), total=point.sum)
            else:
                value = point.as_double if point.WhichOneof("value") == "as_double" else float(point.as_int)
                self._store.update(family, labels, point.time_unix_nano, delta=delta, value=value)
            self._points += 1

    def _skip(self, metric: Metric, reason: str) -> None:
        seen = self._unsupported.get(metric.name, 0)
        self._unsupported[metric.name] = seen + metric_points(metric)
        if not seen:
            logger.warning("%s: not exposing %s: %s (counted in stats 'failed')", self.name, metric.name, reason)
