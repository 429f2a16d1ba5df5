"""The worker's OTel resource: where it runs and on which GPUs, which the join keys energy on.

Precedence (lowest first): what is discovered here < OTEL_RESOURCE_ATTRIBUTES / OTEL_SERVICE_NAME
< carbonspan's own variables (CARBONSPAN_GPU_IDS, CARBONSPAN_ROLE, ...), which exist because a
launcher sets them per worker while OTEL_RESOURCE_ATTRIBUTES is usually set per node.
"""

from __future__ import annotations

import hashlib
import os
import platform
import socket
import uuid
from collections.abc import Mapping

from carbonspan.instrumentation.otlp_push import merged_resource_attributes
from carbonspan.processors import semconv
from carbonspan.processors.otlp import AttributeValue

ENV_GPU_IDS = "CARBONSPAN_GPU_IDS"  # comma-separated GPU UUIDs: wins over discovery
ENV_ROLE = "CARBONSPAN_ROLE"  # prefill | decode | aggregated: wins over the kv_role
ENV_CLOUD_REGION = "CARBONSPAN_CLOUD_REGION"
ENV_CLOUD_PROVIDER = "CARBONSPAN_CLOUD_PROVIDER"
ENV_INSTANCE_ID = "CARBONSPAN_INSTANCE_ID"

ROLE_PREFILL = "prefill"
ROLE_DECODE = "decode"
ROLE_AGGREGATED = "aggregated"
_ROLE_BY_KV_ROLE = {"kv_producer": ROLE_PREFILL, "kv_consumer": ROLE_DECODE}


def role_for(kv_role: str | None) -> str:
    return os.environ.get(ENV_ROLE) or _ROLE_BY_KV_ROLE.get(kv_role or "", ROLE_AGGREGATED)


def _nvml_uuids(visible: str | None) -> list[str]:
    """UUIDs of the visible CUDA devices from NVML; [] when NVML is absent (CPU hosts)."""
    try:
        import pynvml  # nvidia-ml-py
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return []
    try:
        count = pynvml.nvmlDeviceGetCount()
        entries = [e.strip() for e in visible.split(",") if e.strip()] if visible else [str(i) for i in range(count)]
        uuids = []
        for entry in entries:
            if entry.startswith(("GPU-", "MIG-")):
                uuids.append(entry)  # CUDA_VISIBLE_DEVICES may already name UUIDs
            elif entry.isdigit() and int(entry) < count:
                raw = pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetHandleByIndex(int(entry)))
                uuids.append(raw.decode() if isinstance(raw, bytes) else raw)
        return uuids
    finally:
        pynvml.nvmlShutdown()


def cpu_device_id() -> str:
    """A stable id for the host's CPU as a "device": same host and CPU model -> same id."""
    machine = ""
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            with open(path) as f:
                machine = f.read().strip()
                break
        except OSError:
            continue
    model = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    digest = hashlib.sha256(f"{machine or socket.gethostname()}|{model}".encode()).digest()
    return f"CPU-{uuid.UUID(bytes=digest[:16])}"


def gpu_ids(environ: Mapping[str, str] | None = None) -> list[str]:
    env = os.environ if environ is None else environ
    if env.get(ENV_GPU_IDS):
        return [g.strip() for g in env[ENV_GPU_IDS].split(",") if g.strip()]
    return _nvml_uuids(env.get("CUDA_VISIBLE_DEVICES")) or [cpu_device_id()]


def worker_resource(role: str, instance_id: str | None = None) -> dict[str, AttributeValue]:
    host = socket.gethostname()
    explicit: dict[str, AttributeValue] = {
        semconv.CARBON_GPU_IDS: gpu_ids() if os.environ.get(ENV_GPU_IDS) else None,
        semconv.CLOUD_REGION: os.environ.get(ENV_CLOUD_REGION),
        semconv.CLOUD_PROVIDER: os.environ.get(ENV_CLOUD_PROVIDER),
        semconv.SERVICE_INSTANCE_ID: os.environ.get(ENV_INSTANCE_ID),
    }
    if os.environ.get(ENV_ROLE):
        explicit[semconv.SERVICE_NAME] = role
    defaults: dict[str, AttributeValue] = {
        semconv.SERVICE_NAME: role,
        semconv.CARBON_GPU_IDS: gpu_ids(),
        semconv.HOST_NAME: host,
        semconv.SERVICE_INSTANCE_ID: instance_id or f"{host}:{os.getpid()}",
    }
    return merged_resource_attributes(explicit, defaults)
