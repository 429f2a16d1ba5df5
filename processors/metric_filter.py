"""Dropping metrics by name before they reach a pipeline's exporters.

Mostly for the raw 10 Hz series (``hw.energy``, ``hw.power``, ``carbon.worker.*``): the carbon
processor needs them, but a backend that only charts the carbon outputs, or a file meant for a
report, does not; at 10 Hz per GPU and worker they are most of the bytes. The settings are the
OpenTelemetry Collector filter processor's name matching (``metrics.include`` / ``metrics.exclude``
with ``match_type`` strict or regexp and ``metric_names``), so one config section works in both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from opentelemetry.proto.metrics.v1.metrics_pb2 import ResourceMetrics

MATCH_STRICT = "strict"
MATCH_REGEXP = "regexp"
MATCH_TYPES = (MATCH_STRICT, MATCH_REGEXP)


@dataclass(frozen=True)
class NameMatch:
    """Metric names, exactly (``strict``) or as regular expressions (``regexp``) that match
    anywhere in the name, as the Collector's ``regexp.MatchString`` does: anchor with ``^``/``$``."""

    match_type: str
    names: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.match_type not in MATCH_TYPES:
            raise ValueError(f"match_type must be one of {', '.join(MATCH_TYPES)}, got {self.match_type!r}")
        if self.match_type == MATCH_REGEXP:
            for name in self.names:
                re.compile(name)  # raises re.error for a bad pattern, now rather than at the first metric

    def matches(self, name: str) -> bool:
        if self.match_type == MATCH_STRICT:
            return name in self.names
        return any(re.search(pattern, name) for pattern in self.names)


@dataclass(frozen=True)
class MetricFilter:
    """Keeps a metric when ``include`` (if given) matches its name and ``exclude`` (if given) does
    not: include first, as the Collector's filter processor does."""

    include: NameMatch | None = None
    exclude: NameMatch | None = None

    def keeps(self, name: str) -> bool:
        if self.include is not None and not self.include.matches(name):
            return False
        return self.exclude is None or not self.exclude.matches(name)

    def apply(self, batch: list[ResourceMetrics]) -> list[ResourceMetrics]:
        """The batch without the dropped metrics (changed in place), and without the scopes and
        resources left empty."""
        out = []
        for rm in batch:
            for sm in rm.scope_metrics:
                dropped = [i for i, metric in enumerate(sm.metrics) if not self.keeps(metric.name)]
                for i in reversed(dropped):
                    del sm.metrics[i]
            empty = [i for i, sm in enumerate(rm.scope_metrics) if not sm.metrics]
            for i in reversed(empty):
                del rm.scope_metrics[i]
            if rm.scope_metrics:
                out.append(rm)
        return out
