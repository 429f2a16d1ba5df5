"""vLLM entry points: ``register`` (vllm.general_plugins) and ``CarbonStatLogger``
(vllm.stat_logger_plugins). Both do nothing unless CARBONSPAN_VLLM=1.

``register`` runs in every vLLM process; in the frontend it extends
``OutputProcessor.do_tracing`` (vLLM's own per-finished-request tracing hook, active when
``--otlp-traces-endpoint`` is set, which is also what makes vLLM keep the request's
``traceparent``) so that each finished request's timestamps and trace headers are left on the
step's ``IterationStats``; ``CarbonStatLogger.record`` picks them up in the same step and emits
the phase spans under its engine's resource, then advances the load counters from the step's
``iteration_details``.
"""

from __future__ import annotations

import time
from typing import Any

from carbonspan.instrumentation.vllm.clock import ClockAlignment
from carbonspan.instrumentation.vllm.connector import KV_PARAMS_KEY
from carbonspan.instrumentation.vllm.instrument import EngineInstrumentation, enabled
from carbonspan.instrumentation.vllm.resource import role_for
from carbonspan.instrumentation.vllm.timeline import FinishedRequest, KvTransfer, StepLoad

try:
    from vllm.v1.metrics.loggers import StatLoggerBase
except ImportError:  # vLLM absent: the pure parts of this package stay importable
    StatLoggerBase = object  # type: ignore[assignment,misc]

#: IterationStats attributes: [(request fields, trace headers)] of requests finished this step; the
#: EngineCore's monotonic time of the step's output; the earliest SCHEDULED event in the step.
_FINISHED_ATTR = "carbonspan_finished"
_END_ATTR = "carbonspan_end_s"
_SCHEDULED_ATTR = "carbonspan_scheduled_s"
_MAX_STEP_FALLBACK_NS = 1_000_000_000
_patched = False


def register() -> None:
    """vllm.general_plugins entry point."""
    global _patched
    if not enabled() or _patched:
        return
    from vllm.v1.engine import EngineCoreEventType
    from vllm.v1.engine.output_processor import OutputProcessor
    from vllm.v1.metrics.loggers import LoggingStatLogger
    from vllm.v1.metrics.stats import IterationStats

    original = OutputProcessor.do_tracing

    def do_tracing(self: Any, engine_core_output: Any, req_state: Any, iteration_stats: Any) -> None:
        original(self, engine_core_output, req_state, iteration_stats)
        stats = req_state.stats
        if iteration_stats is None or stats is None:
            return
        params = engine_core_output.kv_transfer_params or {}
        kv = params.get(KV_PARAMS_KEY)
        fields = dict(request_id=req_state.external_req_id, prompt_tokens=req_state.prompt_len,
                      cached_tokens=req_state.num_cached_tokens, generated_tokens=stats.num_generation_tokens,
                      queued_s=stats.queued_ts, scheduled_s=stats.scheduled_ts, first_token_s=stats.first_token_ts,
                      last_token_s=stats.last_token_ts, kv=KvTransfer.from_params(kv) if kv else None)
        iteration_stats.__dict__.setdefault(_FINISHED_ATTR, []).append((fields, engine_core_output.trace_headers))

    original_process = OutputProcessor.process_outputs

    def process_outputs(self: Any, engine_core_outputs: Any, engine_core_timestamp: float | None = None,
                        iteration_stats: Any = None, *args: Any, **kwargs: Any) -> Any:
        if iteration_stats is not None and engine_core_timestamp is not None:
            iteration_stats.__dict__[_END_ATTR] = engine_core_timestamp
        return original_process(self, engine_core_outputs, engine_core_timestamp, iteration_stats, *args, **kwargs)

    original_events = IterationStats.update_from_events

    def update_from_events(self: Any, req_id: str, events: Any, *args: Any, **kwargs: Any) -> None:
        original_events(self, req_id, events, *args, **kwargs)
        for event in events:
            if event.type == EngineCoreEventType.SCHEDULED:
                known = self.__dict__.get(_SCHEDULED_ATTR)
                self.__dict__[_SCHEDULED_ATTR] = event.timestamp if known is None else min(known, event.timestamp)

    OutputProcessor.do_tracing = do_tracing
    OutputProcessor.process_outputs = process_outputs
    IterationStats.update_from_events = update_from_events
    # iteration details are on for the load counters, not for an INFO line per engine step (whose
    # formatting alone costs more than this plugin's whole per-step work)
    LoggingStatLogger._log_iteration_details = lambda self, scheduler_stats, engine_idx: None
    _register_connectors()
    _patched = True


def _register_connectors() -> None:
    """Also make ``Carbon<Name>`` usable by name alone (without kv_connector_module_path)."""
    from vllm.distributed.kv_transfer.kv_connector.factory import KVConnectorFactory

    for name in list(KVConnectorFactory._registry):
        wrapped = f"Carbon{name}"
        if not name.startswith("Carbon") and wrapped not in KVConnectorFactory._registry:
            KVConnectorFactory.register_connector(wrapped, "carbonspan.instrumentation.vllm.connector", wrapped)


def step_load(scheduler_stats: Any, iteration_stats: Any, now_ns: int, last_ns: int, busy: bool,
              clock: ClockAlignment) -> StepLoad | None:
    """The step that just ended, from iteration_details (exact batch) or else from IterationStats.

    Its end is the EngineCore's output time where known. Its start: the previous step's end when
    the engine was busy (steps run back to back; ``elapsed_ms`` alone undercounts, it excludes
    scheduling and, with the in-process executor, the forward pass itself); after an idle spell,
    the earliest SCHEDULED event of the step, else ``elapsed_ms`` before its end.
    """
    end_s = getattr(iteration_stats, _END_ATTR, None) if iteration_stats is not None else None
    end = clock.wall_ns(end_s) if end_s is not None else now_ns
    scheduled_s = getattr(iteration_stats, _SCHEDULED_ATTR, None) if iteration_stats is not None else None
    details = getattr(scheduler_stats, "iteration_details", None)
    if details is not None:
        if details.is_dummy:
            return None
        start = end - round(details.elapsed_ms * 1e6)
        batch = (details.num_ctx_tokens, details.num_generation_tokens, details.num_ctx_requests,
                 details.num_generation_requests)
    elif iteration_stats is not None:
        first_tokens = len(iteration_stats.time_to_first_tokens_iter)
        running = scheduler_stats.num_running_reqs if scheduler_stats is not None else first_tokens
        start = max(last_ns, end - _MAX_STEP_FALLBACK_NS)
        batch = (iteration_stats.prompt_token_stats.computed,
                 max(0, iteration_stats.num_generation_tokens - first_tokens), first_tokens,
                 max(0, running - first_tokens))
    else:
        return None
    if scheduled_s is not None:
        start = min(start, clock.wall_ns(scheduled_s))
    if busy:
        start = min(start, last_ns)
    return StepLoad(start, end, *batch)


class CarbonStatLogger(StatLoggerBase):  # type: ignore[misc,valid-type]
    """vllm.stat_logger_plugins entry point; also passed to LLMEngine/AsyncLLM ``stat_loggers``."""

    def __init__(self, vllm_config: Any, engine_index: int = 0, **sinks: Any) -> None:
        self.instrumentation: EngineInstrumentation | None = None
        self._busy = False
        if not enabled():
            return
        kv = vllm_config.kv_transfer_config
        model_config = vllm_config.model_config
        self.model = str(model_config.served_model_name or model_config.model)
        self.instrumentation = EngineInstrumentation(
            self.model, role_for(kv.kv_role if kv else None),
            instance_id=f"{kv.engine_id}" if kv and kv.engine_id else None, **sinks)

    def record(self, scheduler_stats: Any, iteration_stats: Any, mm_cache_stats: Any = None,
               engine_idx: int = 0) -> None:
        inst = self.instrumentation
        if inst is None:
            return
        step = step_load(scheduler_stats, iteration_stats, time.time_ns(), inst.load.last_ns, self._busy,
                         inst.clock)
        if step is not None:
            inst.on_step(step)
        if scheduler_stats is not None:
            self._busy = scheduler_stats.num_running_reqs > 0
        for fields, headers in getattr(iteration_stats, _FINISHED_ATTR, ()):
            inst.on_finished(FinishedRequest(model=self.model, **fields), headers)

    def log_engine_initialized(self) -> None:
        pass
