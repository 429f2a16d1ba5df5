"""The simulated fleet: which workers run where, on which GPUs, and how fast and hot each GPU runs.

A node is one inference worker (a vLLM engine) on ``gpu_count`` GPUs in tensor parallel, in one
cloud region. Its role says what it does with a request: ``prefill`` nodes compute the prompt
and hand the KV cache on, ``decode`` nodes receive it and generate, ``aggregated`` nodes do both.

The performance model is deliberately small but has the shape that matters for attribution:
a step's duration is a fixed part (reading the weights once per step) plus a part per prefill
token (compute-bound) plus a part per decoding sequence (reading its KV cache); the GPU's power
during the step mixes a low-intensity memory-bound draw with a high-intensity compute draw in
proportion to how the step's time was spent. So a prefill-heavy step runs hotter than a step
of a few decoding sequences, and power depends on the batch's composition.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from carbonspan.processors import semconv
from carbonspan.processors.gpu_profiles import PowerProfile, normalize_gpu_model, power_profile

ROLE_PREFILL = "prefill"
ROLE_DECODE = "decode"
ROLE_AGGREGATED = "aggregated"
ROLES = (ROLE_PREFILL, ROLE_DECODE, ROLE_AGGREGATED)

MS = 1_000_000


@dataclass(frozen=True)
class GpuPerformance:
    """Step cost of one GPU model for the simulated model (an 8B-parameter transformer at TP=1).

    Times are seconds; intensities are the fraction of (max - idle) power drawn while the GPU
    spends its time on that kind of work.
    """

    step_base_s: float  # weights read once per step, plus launch overhead
    prefill_token_s: float  # per prompt token computed in the step
    decode_seq_s: float  # per sequence decoded in the step (its KV cache read)
    base_intensity: float = 0.35
    prefill_intensity: float = 0.95
    decode_intensity: float = 0.55
    #: how much of a perfect speed-up tensor parallelism gives (all-reduce costs the rest).
    tp_efficiency: float = 0.85


#: rough relative figures from the boards' memory bandwidth and dense FP16 throughput.
PERFORMANCE: dict[str, GpuPerformance] = {
    "H100 SXM": GpuPerformance(step_base_s=0.006, prefill_token_s=1 / 14_000, decode_seq_s=0.00008),
    "H100 PCIe": GpuPerformance(step_base_s=0.008, prefill_token_s=1 / 10_000, decode_seq_s=0.0001),
    "H200": GpuPerformance(step_base_s=0.0045, prefill_token_s=1 / 14_000, decode_seq_s=0.00006),
    "B200": GpuPerformance(step_base_s=0.0035, prefill_token_s=1 / 25_000, decode_seq_s=0.00005),
    "A100 SXM": GpuPerformance(step_base_s=0.009, prefill_token_s=1 / 6_000, decode_seq_s=0.00012),
    "A100 PCIe": GpuPerformance(step_base_s=0.010, prefill_token_s=1 / 5_500, decode_seq_s=0.00013),
    "L40S": GpuPerformance(step_base_s=0.019, prefill_token_s=1 / 6_500, decode_seq_s=0.0002),
    "L4": GpuPerformance(step_base_s=0.055, prefill_token_s=1 / 2_000, decode_seq_s=0.0005),
    "A10": GpuPerformance(step_base_s=0.027, prefill_token_s=1 / 3_000, decode_seq_s=0.0003),
    "MI300X": GpuPerformance(step_base_s=0.0045, prefill_token_s=1 / 13_000, decode_seq_s=0.00007),
    "MI250X": GpuPerformance(step_base_s=0.009, prefill_token_s=1 / 6_000, decode_seq_s=0.00012),
}

#: NVML / AMD SMI product names, as a real sampler would report them.
DRIVER_NAMES = {
    "H100 SXM": "NVIDIA H100 80GB HBM3",
    "H100 PCIe": "NVIDIA H100 PCIe",
    "H200": "NVIDIA H200",
    "B200": "NVIDIA B200",
    "A100 SXM": "NVIDIA A100-SXM4-80GB",
    "A100 PCIe": "NVIDIA A100 80GB PCIe",
    "L40S": "NVIDIA L40S",
    "L4": "NVIDIA L4",
    "A10": "NVIDIA A10",
    "MI300X": "AMD Instinct MI300X",
    "MI250X": "AMD Instinct MI250X",
}


@dataclass(frozen=True)
class NodeSpec:
    """One worker: a vLLM engine on ``gpu_count`` GPUs (tensor parallel) in one region."""

    name: str
    role: str
    gpu_model: str
    gpu_count: int = 1
    provider: str = "aws"
    region: str = "us-east-1"
    service_name: str | None = None
    instance_id: str | None = None
    host_name: str | None = None
    max_num_seqs: int = 128
    #: prompt tokens a step may compute (vLLM's max_num_batched_tokens; chunked prefill).
    max_batched_tokens: int = 4096
    #: per-board spread of busy power (boards of one model differ by a few percent).
    power_spread: float = 0.03

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"node {self.name!r}: role must be one of {', '.join(ROLES)}, got {self.role!r}")
        if self.gpu_count < 1 or self.max_num_seqs < 1 or self.max_batched_tokens < 1:
            raise ValueError(f"node {self.name!r}: gpu_count, max_num_seqs and max_batched_tokens must be >= 1")
        if self.model_key not in PERFORMANCE or power_profile(self.model_key) is None:
            known = ", ".join(PERFORMANCE)
            raise ValueError(f"node {self.name!r}: unknown GPU model {self.gpu_model!r}; known: {known}")

    @property
    def model_key(self) -> str:
        return normalize_gpu_model(self.gpu_model) or self.gpu_model

    @property
    def driver_name(self) -> str:
        return DRIVER_NAMES.get(self.model_key, self.gpu_model)

    @property
    def performance(self) -> GpuPerformance:
        return PERFORMANCE[self.model_key]

    @property
    def profile(self) -> PowerProfile:
        profile = power_profile(self.model_key)
        assert profile is not None  # checked in __post_init__
        return profile

    @property
    def service(self) -> str:
        return self.service_name or f"vllm-{self.role}"

    @property
    def instance(self) -> str:
        return self.instance_id or self.name

    @property
    def host(self) -> str:
        return self.host_name or f"{self.name}.{self.region}"

    def gpu_ids(self) -> tuple[str, ...]:
        """Stable UUIDs (NVML's ``GPU-<uuid>`` form) derived from the host and index."""
        return tuple(
            "GPU-" + str(uuid.UUID(bytes=hashlib.sha256(f"{self.host}/{i}".encode()).digest()[:16]))
            for i in range(self.gpu_count)
        )

    def resource(self) -> dict[str, Any]:
        """The worker's OTel resource: what the vLLM plugin and the sampler put on their data."""
        return {
            semconv.SERVICE_NAME: self.service,
            semconv.SERVICE_INSTANCE_ID: self.instance,
            semconv.HOST_NAME: self.host,
            semconv.CLOUD_PROVIDER: self.provider,
            semconv.CLOUD_REGION: self.region,
            semconv.CARBON_GPU_IDS: list(self.gpu_ids()),
            semconv.CARBON_GPU_MODEL: self.driver_name,
        }


@dataclass(frozen=True)
class FleetSpec:
    nodes: tuple[NodeSpec, ...]
    model: str = "meta-llama/Llama-3.1-8B-Instruct"
    #: KV cache bytes per token (Llama-3.1-8B: 32 layers x 8 KV heads x 128 dims x 2 (K, V) x 2 bytes).
    kv_bytes_per_token: int = 131_072
    kv_block_tokens: int = 16
    #: share of requests served disaggregated (prefill node -> decode node) when both kinds exist.
    disaggregated_share: float = 0.6
    #: KV transfer links: within a region / between regions.
    kv_bandwidth_same_region_bps: float = 100e9
    kv_bandwidth_cross_region_bps: float = 10e9
    kv_latency_same_region_s: float = 0.0005
    kv_latency_cross_region_s: float = 0.035
    router_service: str = "llm-router"
    router_region: str = "us-east-1"
    router_provider: str = "aws"

    def __post_init__(self) -> None:
        names = [n.name for n in self.nodes]
        if not names or len(set(names)) != len(names):
            raise ValueError("a fleet needs at least one node and unique node names")
        roles = {n.role for n in self.nodes}
        if ROLE_AGGREGATED not in roles and not {ROLE_PREFILL, ROLE_DECODE} <= roles:
            raise ValueError("a fleet needs an aggregated node, or both a prefill and a decode node")
        if not 0.0 <= self.disaggregated_share <= 1.0:
            raise ValueError("disaggregated_share must be in [0, 1]")

    def by_role(self, role: str) -> tuple[NodeSpec, ...]:
        return tuple(n for n in self.nodes if n.role == role)

    def router_resource(self) -> dict[str, Any]:
        return {
            semconv.SERVICE_NAME: self.router_service,
            semconv.SERVICE_INSTANCE_ID: f"{self.router_service}-0",
            semconv.HOST_NAME: f"{self.router_service}.{self.router_region}",
            semconv.CLOUD_PROVIDER: self.router_provider,
            semconv.CLOUD_REGION: self.router_region,
        }


def default_fleet() -> FleetSpec:
    """The demo fleet: grids that differ twenty-fold between the three regions.

    Prefill on 4x H100 in AWS us-east-1 (PJM, ~380 gCO2e/kWh), decode on 2x A100 in GCP
    europe-north1 (Finland, ~40), an aggregated L40S node in AWS ap-south-1 (Mumbai, ~710).
    """
    return FleetSpec(
        nodes=(
            NodeSpec("prefill-0", ROLE_PREFILL, "H100 SXM", 4, "aws", "us-east-1", max_batched_tokens=8192),
            NodeSpec("decode-0", ROLE_DECODE, "A100 SXM", 2, "gcp", "europe-north1", max_num_seqs=192),
            NodeSpec("aggregated-0", ROLE_AGGREGATED, "L40S", 1, "aws", "ap-south-1", max_num_seqs=64,
                     max_batched_tokens=2048),
        )
    )


_NODE_KEYS = {
    "name", "role", "gpu_model", "gpu_count", "provider", "region", "service_name", "instance_id", "host_name",
    "max_num_seqs", "max_batched_tokens", "power_spread",
}
_FLEET_KEYS = {
    "model", "kv_bytes_per_token", "kv_block_tokens", "disaggregated_share", "kv_bandwidth_same_region_bps",
    "kv_bandwidth_cross_region_bps", "kv_latency_same_region_s", "kv_latency_cross_region_s", "router_service",
    "router_region", "router_provider",
}


def fleet_from_config(config: Mapping[str, Any]) -> FleetSpec:
    """A fleet from plain data (a YAML mapping): ``{nodes: [{name, role, gpu_model, ...}], model: ...}``.

    Unknown keys are errors that name the key, so a typo does not silently fall back to a default.
    """
    nodes_raw = config.get("nodes")
    if not isinstance(nodes_raw, list) or not nodes_raw:
        raise ValueError("fleet config: 'nodes' must be a non-empty list")
    nodes = []
    for i, raw in enumerate(nodes_raw):
        if not isinstance(raw, Mapping):
            raise ValueError(f"fleet config: nodes[{i}] must be a mapping")
        unknown = set(raw) - _NODE_KEYS
        if unknown:
            raise ValueError(f"fleet config: nodes[{i}]: unknown keys {', '.join(sorted(unknown))}")
        if not {"name", "role", "gpu_model"} <= set(raw):
            raise ValueError(f"fleet config: nodes[{i}] needs name, role and gpu_model")
        nodes.append(NodeSpec(**raw))
    unknown = set(config) - _FLEET_KEYS - {"nodes"}
    if unknown:
        raise ValueError(f"fleet config: unknown keys {', '.join(sorted(unknown))}")
    return FleetSpec(nodes=tuple(nodes), **{k: v for k, v in config.items() if k != "nodes"})

