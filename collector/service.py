"""The running collector: builds the components a config names, wires them, runs the ticker, and
shuts down without losing a span.

Threads, not asyncio: grpcio serves on its own pool, the HTTP receiver and health check share
one asyncio loop on a thread, exporters send from theirs, and a ticker thread reads the clock
(the only place time is read for the processors) and releases what they held back.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from carbonspan.collector.config import CollectorConfig
from carbonspan.collector.exporters.base import Exporter
from carbonspan.collector.health import HealthCheck
from carbonspan.collector.intensity_config import facility_from_config, intensity_provider_from_config
from carbonspan.collector.pipeline import Pipeline, Router
from carbonspan.collector.pipeline_stages import BatchStage, CarbonStage, FilterStage, RollupStage, Stage
from carbonspan.collector.receivers.loop_thread import LoopThread
from carbonspan.collector.receivers.otlp import OtlpReceiver
from carbonspan.collector.self_metrics import CollectorMetrics

log = logging.getLogger("carbonspan.collector")
TICK_S = 0.1
_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the record's ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _RESERVED})
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("carbonspan")
    root.handlers[:] = [handler]
    root.setLevel({"warn": "WARNING"}.get(level, level.upper()))
    root.propagate = False


class Service:
    def __init__(self, config: CollectorConfig, *, clock: Callable[[], int] = time.time_ns,
                 tick_s: float = TICK_S) -> None:
        self.config = config
        self._tick_s = tick_s
        self._stop = threading.Event()
        self._stopped = threading.Event()
        self._ticker: threading.Thread | None = None
        self._addresses: dict[str, str] = {}
        self._lifecycle = threading.Lock()
        self._started = False
        used = {p_id: p for p_id, p in config.pipelines.items()}
        self.exporters: dict[str, Exporter] = {}
        for pipeline in used.values():
            for exporter_id in pipeline.exporters:
                if exporter_id not in self.exporters:
                    settings = config.exporters[exporter_id].settings
                    self.exporters[exporter_id] = settings.cls(exporter_id, settings.config)
        self.carbon: dict[str, CarbonStage] = {}
        self.rollups: list[RollupStage] = []
        pipelines = [self._pipeline(p) for p in used.values()]
        fed = {pid for p in used.values() if p.signal == "metrics" for pid in p.processors}
        for processor_id in self.carbon.keys() - fed:
            log.warning("carbon processor is in no metrics pipeline: it gets no energy data and can only estimate",
                        extra={"processor": processor_id})
        self.router = Router(pipelines, clock)
        self.metrics = (CollectorMetrics(self.router, list(self.carbon.values()), self.rollups, self.exporters)
                        if config.telemetry.metrics_enabled else None)
        self._loop: LoopThread | None = None
        self.receivers: list[OtlpReceiver] = []
        self.health: list[HealthCheck] = []

    def _pipeline(self, spec) -> Pipeline:
        stages: list[Stage] = []
        limiter = None
        for processor_id in spec.processors:
            component = self.config.processors[processor_id]
            if component.type == "carbon":
                stage = self.carbon.get(processor_id)
                if stage is None:
                    settings = component.settings
                    stage = self.carbon[processor_id] = CarbonStage(
                        processor_id, settings, intensity_provider_from_config(settings.intensity),
                        facility_from_config(settings.facility))
            elif component.type == "carbon_rollup":
                stage = RollupStage(processor_id, component.settings, self._record_request,
                                    after=stages[-1] if stages else None)
                self.rollups.append(stage)
            elif component.type == "batch":
                stage = BatchStage(processor_id, component.settings)
            elif component.type == "filter":
                stage = FilterStage(processor_id, component.settings)
            else:  # memory_limiter: admission control at the receivers, data passes through
                stage = Stage(processor_id)
                limiter = component.settings
            stages.append(stage)
        return Pipeline(spec.id, spec.signal, spec.receivers, stages,
                        [self.exporters[e] for e in spec.exporters], limiter)

    def _record_request(self, summary) -> None:
        if self.metrics is not None:
            self.metrics.record_request(summary)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        with self._lifecycle:
            if self._started:
                raise RuntimeError("Service.start() called twice")
            self._started = True
            for exporter_id, exporter in self.exporters.items():
                exporter.start()
                address = _listening_address(exporter)
                if address:
                    self._addresses[exporter_id] = address
            for stage in self.carbon.values():
                start = getattr(stage.intensity, "start", None)
                if start is not None:
                    start()
            self._loop = LoopThread("carbonspan-aio")
            for extension_id in self.config.service_extensions:
                component = self.config.extensions[extension_id]
                if component.type == "health_check":
                    health = HealthCheck(extension_id, component.settings, self._loop)
                    self._addresses[extension_id] = health.start()
                    self.health.append(health)
            receiver_ids = dict.fromkeys(r for p in self.config.pipelines.values() for r in p.receivers)
            for receiver_id in receiver_ids:
                receiver = OtlpReceiver(receiver_id, self.config.receivers[receiver_id].settings, self.router,
                                        self._loop)
                self.receivers.append(receiver)
                self._addresses.update(receiver.start())
            self._ticker = threading.Thread(target=self._tick_loop, name="carbonspan-ticker", daemon=True)
            self._ticker.start()
            for health in self.health:
                health.set_healthy(True)
            log.info("collector started", extra={"addresses": self._addresses, "config": self.config.source})

    def addresses(self) -> dict[str, str]:
        """host:port each listening component is bound to (port 0 in the config resolved)."""
        return dict(self._addresses)

    def _tick_loop(self) -> None:
        interval_ns = self.config.telemetry.metrics_interval_ns
        next_metrics = time.monotonic_ns() + interval_ns
        while not self._stop.wait(self._tick_s):
            try:
                self.router.tick()
                if time.monotonic_ns() >= next_metrics:
                    next_metrics += interval_ns
                    self.push_metrics()
            except Exception:  # keep ticking: a bad tick must not stop every later release
                log.exception("ticker failed")

    def push_metrics(self) -> None:
        """Send the carbon and self-metrics to every metrics pipeline's exporters now."""
        if self.metrics is None:
            return
        request = self.metrics.collect()
        if request is not None:
            self.router.export_metrics_everywhere(request)

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """Stop receiving, flush every held span through the processors, then drain the exporters."""
        with self._lifecycle:
            if not self._started or self._stopped.is_set():
                return
            deadline = time.monotonic() + timeout_s
            for health in self.health:
                health.set_healthy(False)
            for receiver in self.receivers:
                receiver.stop(min(2.0, timeout_s / 4))
            self._stop.set()
            if self._ticker is not None:
                self._ticker.join(timeout_s)
            self.router.tick(flush=True)
            self.push_metrics()
            held = self.router.held_spans()
            for exporter_id, exporter in self.exporters.items():
                try:
                    exporter.shutdown(max(0.1, deadline - time.monotonic()))
                except Exception:
                    log.exception("exporter shutdown failed", extra={"exporter": exporter_id})
            for stage in self.carbon.values():
                stop = getattr(stage.intensity, "stop", None)
                if stop is not None:
                    stop()
            for health in self.health:
                health.stop(1.0)
            if self._loop is not None:
                self._loop.stop()
            if self.metrics is not None:
                self.metrics.shutdown()
            self._stopped.set()
            log.info("collector stopped", extra={"spans_received": sum(self.router.spans_received.values()),
                                                 "spans_exported": dict(self.router.spans_exported),
                                                 "spans_still_held": held})

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until shutdown has finished (True) or the timeout passed (False)."""
        return self._stopped.wait(timeout_s)


def _listening_address(exporter: Exporter) -> str | None:
    """Exporters that serve (prometheus) say where through an ``address`` property: (host, port)."""
    address = getattr(exporter, "address", None)
    if isinstance(address, tuple):
        host, port = address[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return None
