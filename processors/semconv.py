"""Every attribute, metric name and unit carbonspan reads or writes, defined once.

Users write TraceQL queries, PromQL alerts and dashboards against these strings, so they are a
public interface: renaming one is a breaking change. Nothing else in the code base spells them
out as literals; import them from here.

OpenTelemetry semantic conventions are used where they exist (``cloud.*``, ``host.*``,
``service.*``, ``gen_ai.*``, ``hw.*``); carbonspan's own names live under ``carbon.``. Attributes
carry their unit in the name (OTel attributes have no unit field); metrics carry UCUM units.
"""

from __future__ import annotations

from typing import Final

# --------------------------------------------------------------------------------------------
# Resource attributes (inputs, on every span and metric of a node)
# --------------------------------------------------------------------------------------------
SERVICE_NAME: Final = "service.name"
SERVICE_INSTANCE_ID: Final = "service.instance.id"
HOST_NAME: Final = "host.name"
CLOUD_PROVIDER: Final = "cloud.provider"
CLOUD_REGION: Final = "cloud.region"
#: string array: UUIDs of the GPUs the worker runs on (a TP=4 worker lists four).
CARBON_GPU_IDS: Final = "carbon.gpu.ids"
#: optional: the GPUs' model name, used to estimate energy when no measurement arrives.
CARBON_GPU_MODEL: Final = "carbon.gpu.model"
#: optional: grid zone of the node, overriding the region -> zone mapping (input and output).
CARBON_GRID_ZONE: Final = "carbon.grid.zone"

# --------------------------------------------------------------------------------------------
# Span attributes (inputs, written by the vLLM instrumentation)
# --------------------------------------------------------------------------------------------
CARBON_PHASE: Final = "carbon.phase"
PHASE_QUEUE: Final = "queue"
PHASE_PREFILL: Final = "prefill"
PHASE_KV_TRANSFER: Final = "kv_transfer"
PHASE_DECODE: Final = "decode"
PHASES: Final = (PHASE_QUEUE, PHASE_PREFILL, PHASE_KV_TRANSFER, PHASE_DECODE)
#: phases during which the request occupies GPU compute, and so takes a share of its energy.
COMPUTE_PHASES: Final = (PHASE_PREFILL, PHASE_DECODE)

GEN_AI_REQUEST_MODEL: Final = "gen_ai.request.model"
GEN_AI_REQUEST_ID: Final = "gen_ai.request.id"
GEN_AI_USAGE_INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"

#: tokens the span computed on its GPUs: the numerator of the ``tokens`` policy. Prefill: prompt
#: tokens not served from a cache; decode: tokens generated in decode steps. When absent the join
#: uses gen_ai.usage.input_tokens for prefill spans and gen_ai.usage.output_tokens for decode spans.
CARBON_TOKENS: Final = "carbon.tokens"

# KV-transfer span attributes (decode side of a disaggregated handoff)
CARBON_KV_BYTES: Final = "carbon.kv.bytes"
CARBON_KV_BLOCKS: Final = "carbon.kv.blocks"
CARBON_KV_CONNECTOR: Final = "carbon.kv.connector"
CARBON_KV_REMOTE_ENGINE: Final = "carbon.kv.remote_engine"

# --------------------------------------------------------------------------------------------
# Metrics in (GPU energy from the sampler, worker load from the vLLM plugin)
# --------------------------------------------------------------------------------------------
HW_ENERGY: Final = "hw.energy"  # cumulative monotonic Sum, J
HW_POWER: Final = "hw.power"  # Gauge, W
HW_ID: Final = "hw.id"
HW_TYPE: Final = "hw.type"
HW_TYPE_GPU: Final = "gpu"
HW_VENDOR: Final = "hw.vendor"
HW_MODEL: Final = "hw.model"

#: cumulative Sum of tokens the worker computed, by ``carbon.phase`` (prefill, decode).
CARBON_WORKER_TOKENS: Final = "carbon.worker.tokens"
#: cumulative Sum of request-seconds the worker spent computing (running requests x time), by
#: ``carbon.phase``. It is the denominator of the ``time`` attribution policy, as
#: ``carbon.worker.tokens`` is of the ``tokens`` policy.
CARBON_WORKER_REQUEST_TIME: Final = "carbon.worker.request_time"

# --------------------------------------------------------------------------------------------
# Span attributes written by the carbon join (outputs, on every span)
# --------------------------------------------------------------------------------------------
CARBON_ENERGY_JOULES: Final = "carbon.energy.joules"
#: with idle amortisation on: the part of carbon.energy.joules that is the GPUs' idle energy.
CARBON_ENERGY_IDLE_JOULES: Final = "carbon.energy.idle_joules"
CARBON_ENERGY_FACILITY_JOULES: Final = "carbon.energy.facility_joules"
CARBON_PUE: Final = "carbon.pue"
CARBON_INTENSITY: Final = "carbon.intensity.gco2e_per_kwh"
CARBON_INTENSITY_SOURCE: Final = "carbon.intensity.source"
CARBON_OPERATIONAL_GCO2E: Final = "carbon.operational.gco2e"
CARBON_EMBODIED_GCO2E: Final = "carbon.embodied.gco2e"
#: where the embodied figure came from (the table row's source), or ``none: ...`` naming a GPU model
#: the embodied table has no figure for, whose embodied share then counts as 0.
CARBON_EMBODIED_SOURCE: Final = "carbon.embodied.source"
CARBON_TOTAL_GCO2E: Final = "carbon.total.gco2e"
CARBON_QUALITY: Final = "carbon.quality"
#: the fraction of its GPUs' energy over its window that the span was given (0..1, GPU-averaged).
CARBON_SHARE: Final = "carbon.share"
#: string array: the GPUs whose energy was joined (the resource's carbon.gpu.ids, for convenience).
CARBON_ENERGY_GPU_IDS: Final = "carbon.energy.gpu_ids"

QUALITY_MEASURED: Final = "measured"
QUALITY_INTERPOLATED: Final = "interpolated"
QUALITY_EXTRAPOLATED: Final = "extrapolated"
QUALITY_ESTIMATED: Final = "estimated"
QUALITY_MISSING: Final = "missing"
#: best first: a span made of several GPUs gets the worst of its GPUs' qualities.
QUALITIES: Final = (
    QUALITY_MEASURED,
    QUALITY_INTERPOLATED,
    QUALITY_EXTRAPOLATED,
    QUALITY_ESTIMATED,
    QUALITY_MISSING,
)

_QUALITY_RANK: Final = {q: i for i, q in enumerate(QUALITIES)}


def worse_quality(current: str | None, other: str) -> str:
    """The worse of two qualities (None counts as better than any)."""
    if current is None or _QUALITY_RANK.get(other, len(QUALITIES)) > _QUALITY_RANK.get(current, len(QUALITIES)):
        return other
    return current


#: prefix of the counterfactual attributes: ``carbon.counterfactual.<region>.gco2e``.
CARBON_COUNTERFACTUAL_PREFIX: Final = "carbon.counterfactual."


def counterfactual_attribute(region: str) -> str:
    return f"{CARBON_COUNTERFACTUAL_PREFIX}{region}.gco2e"


# --------------------------------------------------------------------------------------------
# Root-span attributes written by the request roll-up
# --------------------------------------------------------------------------------------------
#: prefix of the attributes the roll-up writes on a request's root span (it also writes the model
#: where the root has none).
CARBON_REQUEST_PREFIX: Final = "carbon.request."
CARBON_REQUEST_ENERGY_JOULES: Final = "carbon.request.energy.joules"
CARBON_REQUEST_OPERATIONAL_GCO2E: Final = "carbon.request.operational.gco2e"
CARBON_REQUEST_EMBODIED_GCO2E: Final = "carbon.request.embodied.gco2e"
CARBON_REQUEST_TOTAL_GCO2E: Final = "carbon.request.total.gco2e"
CARBON_REQUEST_SPAN_COUNT: Final = "carbon.request.span_count"
CARBON_REQUEST_QUALITY: Final = "carbon.request.quality"
#: where the request ran: ``service.name@cloud.region`` of its phase spans in time order, joined by '>'.
CARBON_REQUEST_ROUTE: Final = "carbon.request.route"


def request_phase_gco2e(phase: str) -> str:
    """``carbon.request.<phase>.gco2e``: total CO2e of the request's spans of that phase."""
    return f"carbon.request.{phase}.gco2e"


def request_phase_energy(phase: str) -> str:
    """``carbon.request.<phase>.energy.joules``."""
    return f"carbon.request.{phase}.energy.joules"


def request_region_gco2e(region: str) -> str:
    """``carbon.request.region.<region>.gco2e``: total CO2e of the request's spans in that region."""
    return f"carbon.request.region.{region}.gco2e"


# --------------------------------------------------------------------------------------------
# Metrics out (names as in OTLP; Prometheus sees them with dots as underscores and unit suffixes)
# --------------------------------------------------------------------------------------------
METRIC_REQUEST_CO2E: Final = "carbon.request.co2e"  # histogram, g
METRIC_REQUEST_ENERGY: Final = "carbon.request.energy"  # histogram, J
METRIC_GPU_ATTRIBUTED_ENERGY: Final = "carbon.gpu.attributed_energy"  # counter, J
METRIC_GPU_IDLE_ENERGY: Final = "carbon.gpu.idle_energy"  # counter, J
METRIC_GPU_MEASURED_ENERGY: Final = "carbon.gpu.measured_energy"  # counter, J
METRIC_GPU_LAST_SAMPLE: Final = "carbon.gpu.last_sample"  # gauge, s (unix time of newest sample)
METRIC_GRID_INTENSITY: Final = "carbon.grid.intensity"  # gauge, gCO2e/kWh
#: per enriched span, for ratios such as gCO2e per 1k tokens by GPU model and region, and energy
#: by phase; labels: carbon.phase, hw.model, cloud.region, service.name.
METRIC_SPAN_ENERGY: Final = "carbon.span.energy"  # counter, J
METRIC_SPAN_CO2E: Final = "carbon.span.co2e"  # counter, g
METRIC_SPAN_TOKENS: Final = "carbon.span.tokens"  # counter, {token}

# self-observability of the collector
METRIC_COLLECTOR_SPANS_RECEIVED: Final = "carbonspan.collector.spans.received"
METRIC_COLLECTOR_SPANS_EXPORTED: Final = "carbonspan.collector.spans.exported"
METRIC_COLLECTOR_SPANS_FLAGGED: Final = "carbonspan.collector.spans.flagged"
METRIC_COLLECTOR_SPANS_LATE: Final = "carbonspan.collector.spans.late"
METRIC_COLLECTOR_METRIC_POINTS_RECEIVED: Final = "carbonspan.collector.metric_points.received"
METRIC_COLLECTOR_REJECTED: Final = "carbonspan.collector.rejected"
METRIC_COLLECTOR_QUEUE_SIZE: Final = "carbonspan.collector.queue.size"
METRIC_COLLECTOR_SPANS_PENDING: Final = "carbonspan.collector.spans.pending"

# metric attribute keys used only on outputs
CARBON_INTENSITY_FALLBACK: Final = "carbon.intensity.fallback"
#: the series that takes a metric's values beyond its cardinality limit (as the OTel SDK names it)
OTEL_METRIC_OVERFLOW: Final = "otel.metric.overflow"
REJECT_REASON: Final = "reason"

# --------------------------------------------------------------------------------------------
# Units (UCUM)
# --------------------------------------------------------------------------------------------
UNIT_JOULE: Final = "J"
UNIT_WATT: Final = "W"
UNIT_GRAM: Final = "g"
UNIT_SECOND: Final = "s"
UNIT_TOKEN: Final = "{token}"
UNIT_INTENSITY: Final = "g/kW.h"
UNIT_SPAN: Final = "{span}"


# --------------------------------------------------------------------------------------------
# Prometheus exposition names (OTel's Prometheus compatibility rules: dots become underscores,
# the unit is appended, counters end in _total). Dashboards and alert rules use these.
# --------------------------------------------------------------------------------------------
PROMETHEUS_NAMES: Final = {
    METRIC_REQUEST_CO2E: "carbon_request_co2e_grams",
    METRIC_REQUEST_ENERGY: "carbon_request_energy_joules",
    METRIC_GPU_ATTRIBUTED_ENERGY: "carbon_gpu_attributed_energy_joules_total",
    METRIC_GPU_IDLE_ENERGY: "carbon_gpu_idle_energy_joules_total",
    METRIC_GPU_MEASURED_ENERGY: "carbon_gpu_measured_energy_joules_total",
    METRIC_GPU_LAST_SAMPLE: "carbon_gpu_last_sample_seconds",
    METRIC_GRID_INTENSITY: "carbon_grid_intensity_gco2e_per_kwh",
    METRIC_SPAN_ENERGY: "carbon_span_energy_joules_total",
    METRIC_SPAN_CO2E: "carbon_span_co2e_grams_total",
    METRIC_SPAN_TOKENS: "carbon_span_tokens_total",
    METRIC_COLLECTOR_SPANS_RECEIVED: "carbonspan_collector_spans_received_total",
    METRIC_COLLECTOR_SPANS_EXPORTED: "carbonspan_collector_spans_exported_total",
    METRIC_COLLECTOR_SPANS_FLAGGED: "carbonspan_collector_spans_flagged_total",
    METRIC_COLLECTOR_SPANS_LATE: "carbonspan_collector_spans_late_total",
    METRIC_COLLECTOR_METRIC_POINTS_RECEIVED: "carbonspan_collector_metric_points_received_total",
    METRIC_COLLECTOR_REJECTED: "carbonspan_collector_rejected_total",
    METRIC_COLLECTOR_QUEUE_SIZE: "carbonspan_collector_queue_size",
    METRIC_COLLECTOR_SPANS_PENDING: "carbonspan_collector_spans_pending",
}


def prometheus_label(attribute: str) -> str:
    """Prometheus label name of an attribute key (``cloud.region`` -> ``cloud_region``)."""
    return attribute.replace(".", "_")
