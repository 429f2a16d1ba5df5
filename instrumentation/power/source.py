"""What every GPU power backend provides: the GPUs it sees and one reading per GPU on demand.

Backends stay thin (one driver call per quantity, units converted to J and W); everything that
turns readings into OTLP series (wrap and reset detection, integrating power-only GPUs, the
schedule) lives in the sampler, so NVML, AMD SMI and the simulator are treated alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

VENDOR_NVIDIA = "nvidia"
VENDOR_AMD = "amd"


@dataclass(frozen=True, slots=True)
class GpuInfo:
    """One physical GPU board.

    ``power_window_ns``: the power the driver reports is an average over this trailing window
    (NVML on Ampere and newer: 1 s); 0 means (near) instantaneous. The sampler uses it to place
    integrated energy at the window's centre. ``energy_wrap_j``: the modulus of the hardware
    energy counter in J where it can wrap within the sampler's lifetime; None when it cannot.
    ``mig_uuids``: the MIG devices carved out of the board (their energy is the board's; NVML
    reports none per MIG device).
    """

    index: int
    uuid: str
    model: str
    vendor: str
    power_window_ns: int = 0
    energy_wrap_j: float | None = None
    mig_uuids: tuple[str, ...] = ()


@dataclass(slots=True)  # not frozen: one per GPU and tick, and a frozen dataclass's __init__ costs 5x
class Reading:
    """One reading of one GPU. ``energy_j``: the device's cumulative energy counter in J (since
    driver load, or whatever origin the device uses), None where it has none; ``power_w``: the
    power the driver reports, None where it reports none."""

    time_ns: int
    energy_j: float | None
    power_w: float | None


class SourceError(Exception):
    """Reading a GPU failed this time (driver busy, GPU lost, timeout): the sampler logs it,
    skips that GPU for this tick and tries again at the next."""


class NotSupported(SourceError):
    """The GPU or driver does not offer this quantity at all: asking again will not help."""


class PowerSource(Protocol):
    def gpus(self) -> list[GpuInfo]: ...

    def read(self, index: int) -> Reading:
        """Raises SourceError (or NotSupported) when the GPU cannot be read."""
        ...

    def read_energy(self, index: int) -> float | None:
        """The energy counter alone (J), for the polls between ticks: one driver call, no
        allocation. None where the GPU has no counter (any more); raises SourceError."""
        ...

    def close(self) -> None: ...
