"""Power profiles of GPU models, and the canonical model name for what a driver reports.

Drivers name the same board many ways ("NVIDIA H100 80GB HBM3" is an H100 SXM; "NVIDIA
A100-SXM4-80GB" an A100 SXM), and the table of power figures, the simulator and the join's
``estimated`` path all need one name per model. The figures live in ``data/gpu_power.csv`` with
their sources (``data/gpu_power.md`` explains them).
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from functools import cache
from importlib.resources import files


@dataclass(frozen=True)
class PowerProfile:
    model: str
    vendor: str
    idle_w: float
    max_w: float
    source: str

    def power_at(self, load: float) -> float:
        """Linear power model: idle at load 0, maximum board power at load 1."""
        return self.idle_w + (self.max_w - self.idle_w) * load


@cache
def _profiles() -> dict[str, PowerProfile]:
    text = files("carbonspan.processors").joinpath("data/gpu_power.csv").read_text(encoding="utf-8")
    return {
        row["model"]: PowerProfile(
            model=row["model"],
            vendor=row["vendor"],
            idle_w=float(row["idle_w"]),
            max_w=float(row["max_w"]),
            source=row["source"],
        )
        for row in csv.DictReader(text.splitlines())
    }


def known_models() -> tuple[str, ...]:
    return tuple(_profiles())


def power_profile(model: str) -> PowerProfile | None:
    """The profile of a canonical model name, or of any name ``normalize_gpu_model`` understands."""
    canonical = normalize_gpu_model(model)
    return _profiles().get(canonical) if canonical else None


def normalize_gpu_model(name: str) -> str | None:
    """Canonical model for a driver's product name (NVML ``nvmlDeviceGetName``, AMD SMI
    ``market_name``) or for a canonical name in any case; None when the board is not one we know.

    Variants with different power are told apart: H100 PCIe from SXM (NVML calls the SXM5 board
    "H100 80GB HBM3"), L40S from L40 and L4, A10 from A100. Boards we have no figures for (H100 NVL,
    L40, A10G ...) give None rather than a near miss.
    """
    tokens = re.findall(r"[a-z0-9]+", name.lower())
    token_set = set(tokens)
    is_pcie = "pcie" in token_set
    is_sxm = any(t.startswith("sxm") for t in tokens)
    if "b200" in token_set:
        return "B200"
    if "h200" in token_set:
        return "H200" if "nvl" not in token_set else None
    if "h100" in token_set:
        if "nvl" in token_set:
            return None
        return "H100 PCIe" if is_pcie else "H100 SXM"
    if "a100" in token_set:
        if is_pcie:
            return "A100 PCIe"
        return "A100 SXM" if is_sxm else None
    if "l40s" in token_set:
        return "L40S"
    if "l4" in token_set:
        return "L4"
    if "a10" in token_set:
        return "A10"
    if "mi300x" in token_set:
        return "MI300X"
    if "mi250x" in token_set:
        return "MI250X"
    return None
