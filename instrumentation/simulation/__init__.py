"""Simulated LLM fleet with known ground truth: the demo's workload when vLLM is absent, and the
accuracy benchmark's reference (see replay.Replay)."""

from carbonspan.instrumentation.simulation.fleet import FleetSpec, NodeSpec, default_fleet, fleet_from_config
from carbonspan.instrumentation.simulation.replay import Batch, OtlpGrpcSink, Replay, ReplaySettings
from carbonspan.instrumentation.simulation.workload import WorkloadSpec

__all__ = [
    "Batch",
    "FleetSpec",
    "NodeSpec",
    "OtlpGrpcSink",
    "Replay",
    "ReplaySettings",
    "WorkloadSpec",
    "default_fleet",
    "fleet_from_config",
]
