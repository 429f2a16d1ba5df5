"""The processors as pipeline stages: data in, data out now, data out later.

A stage takes a batch and returns what may go on at once; what it holds back it returns from
``release`` (called by the service's ticker with the time, and with ``flush`` at shutdown). The
processors themselves are pure; the stages only hand them the time the service read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from opentelemetry.proto.metrics.v1.metrics_pb2 import ResourceMetrics
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans

from carbonspan.collector.pipeline_settings import BatchSettings, CarbonSettings
from carbonspan.processors.join import CarbonJoin, SpanFigures
from carbonspan.processors.metric_filter import MetricFilter
from carbonspan.processors.rollup import RequestRollup, RequestSummary, RollupSettings

if TYPE_CHECKING:
    from carbonspan.processors.intensity import IntensityProvider


def span_count(batch: list[ResourceSpans]) -> int:
    return sum(len(ss.spans) for rs in batch for ss in rs.scope_spans)


def point_count(batch: list[ResourceMetrics]) -> int:
    total = 0
    for rm in batch:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                kind = metric.WhichOneof("data")
                total += len(getattr(metric, kind).data_points) if kind else 0
    return total


class Stage:
    """A pass-through stage: the default for each signal a processor type does not hold back."""

    def __init__(self, component_id: str) -> None:
        self.id = component_id

    def traces(self, batch: list[ResourceSpans], now_ns: int) -> list[ResourceSpans]:
        return batch

    def metrics(self, batch: list[ResourceMetrics], now_ns: int) -> list[ResourceMetrics]:
        return batch

    def release_traces(self, now_ns: int, flush: bool) -> list[ResourceSpans]:
        return []

    def release_metrics(self, now_ns: int, flush: bool) -> list[ResourceMetrics]:
        return []

    @property
    def pending_spans(self) -> int:
        return 0


class CarbonStage(Stage):
    """The join. One instance per processor id: its traces and metrics pipelines share it, since
    the spans it prices wait for the energy that comes in on the metrics pipeline."""

    def __init__(self, component_id: str, settings: CarbonSettings, intensity: IntensityProvider,
                 facility) -> None:
        super().__init__(component_id)
        self.intensity = intensity
        self.join = CarbonJoin(settings.join, intensity, facility)
        self.metric_points_rejected = 0
        self.last_ingest_errors: list[str] = []
        #: the figures of the spans it last handed on, for a roll-up stage right after this one (None:
        #: nobody reads them).
        self.figures: SpanFigures | None = None

    def traces(self, batch: list[ResourceSpans], now_ns: int) -> list[ResourceSpans]:
        self._clear_figures()
        return self.join.add_spans(batch, now_ns, figures=self.figures)

    def metrics(self, batch: list[ResourceMetrics], now_ns: int) -> list[ResourceMetrics]:
        stats = self.join.add_metrics(batch)
        if stats.rejected:
            self.metric_points_rejected += stats.rejected
            self.last_ingest_errors = stats.errors
        return batch

    def release_traces(self, now_ns: int, flush: bool) -> list[ResourceSpans]:
        self._clear_figures()
        return self.join.release(now_ns, flush=flush, figures=self.figures)

    def _clear_figures(self) -> None:
        """Only the spans about to be handed on: the next stage reads their figures right away."""
        if self.figures is not None:
            self.figures.clear()

    @property
    def pending_spans(self) -> int:
        return self.join.pending_spans


class RollupStage(Stage):
    """The roll-up. Right after a carbon stage (``after``) it takes the join's figures in-process
    instead of reading back the attributes the join has just written."""

    def __init__(self, component_id: str, settings: RollupSettings,
                 on_request: Callable[[RequestSummary], None], after: Stage | None = None) -> None:
        super().__init__(component_id)
        self.rollup = RequestRollup(settings)
        self._on_request = on_request
        self._held = 0
        self._join = after if isinstance(after, CarbonStage) else None
        if self._join is not None and self._join.figures is None:
            self._join.figures = []

    def traces(self, batch: list[ResourceSpans], now_ns: int) -> list[ResourceSpans]:
        self._held += span_count(batch)  # before the roll-up takes the spans it holds out of the batch
        self.rollup.add(batch, now_ns, self._join.figures if self._join is not None else None)
        return []

    def release_traces(self, now_ns: int, flush: bool) -> list[ResourceSpans]:
        out = self.rollup.release(now_ns, flush=flush)
        for summary in out.requests:
            self._on_request(summary)
        self._held -= span_count(out.spans)
        return out.spans

    @property
    def pending_spans(self) -> int:
        return self._held


class _Buffer:
    def __init__(self, settings: BatchSettings, count: Callable[[list], int]) -> None:
        self.settings = settings
        self.count = count
        self.items: list = []
        self.size = 0
        self.first_ns: int | None = None

    def add(self, batch: list, now_ns: int) -> list:
        if batch:
            self.items.extend(batch)
            self.size += self.count(batch)
            self.first_ns = now_ns if self.first_ns is None else self.first_ns
        return self.take() if self.size >= self.settings.send_batch_size else []

    def due(self, now_ns: int, flush: bool) -> list:
        if self.items and (flush or now_ns - (self.first_ns or now_ns) >= self.settings.timeout_ns):
            return self.take()
        return []

    def take(self) -> list:
        items, self.items, self.size, self.first_ns = self.items, [], 0, None
        return items


class FilterStage(Stage):
    """Drops metrics by name as they pass (the ``filter`` processor)."""

    def __init__(self, component_id: str, metric_filter: MetricFilter) -> None:
        super().__init__(component_id)
        self.filter = metric_filter

    def metrics(self, batch: list[ResourceMetrics], now_ns: int) -> list[ResourceMetrics]:
        return self.filter.apply(batch)


class BatchStage(Stage):
    """Groups data into fewer, larger export requests: by size, or after ``timeout``."""

    def __init__(self, component_id: str, settings: BatchSettings) -> None:
        super().__init__(component_id)
        self._spans = _Buffer(settings, span_count)
        self._metrics = _Buffer(settings, point_count)

    def traces(self, batch: list[ResourceSpans], now_ns: int) -> list[ResourceSpans]:
        return self._spans.add(batch, now_ns)

    def metrics(self, batch: list[ResourceMetrics], now_ns: int) -> list[ResourceMetrics]:
        return self._metrics.add(batch, now_ns)

    def release_traces(self, now_ns: int, flush: bool) -> list[ResourceSpans]:
        return self._spans.due(now_ns, flush)

    def release_metrics(self, now_ns: int, flush: bool) -> list[ResourceMetrics]:
        return self._metrics.due(now_ns, flush)

    @property
    def pending_spans(self) -> int:
        return self._spans.size
