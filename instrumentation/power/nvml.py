"""NVIDIA GPUs through NVML (nvidia-ml-py's ``pynvml``).

Energy: ``nvmlDeviceGetTotalEnergyConsumption`` (mJ since the driver was loaded; Volta and
newer) is preferred because it integrates power inside the GPU at the GPU's own rate, so the
energy between two readings is exact whatever the sampling rate. Where it is not supported the
power is read instead with ``nvmlDeviceGetPowerUsage`` (mW) and the sampler integrates it; on
Ampere and newer that figure is a 1 s trailing average, which ``GpuInfo.power_window_ns`` says.

NVML enumerates every GPU of the node whatever ``CUDA_VISIBLE_DEVICES`` says, which is what a
per-node sampler wants. MIG instances report no energy of their own: the board is measured and
its MIG devices are listed on ``GpuInfo.mig_uuids``.

Run against the real library on a GPU node:
``python -c "from carbonspan.instrumentation.power.nvml import NvmlSource as S; s=S(); print(s.gpus(), s.read(0))"``
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from types import ModuleType

from carbonspan.instrumentation.power.source import VENDOR_NVIDIA, GpuInfo, NotSupported, Reading, SourceError

logger = logging.getLogger(__name__)

_AMPERE_POWER_WINDOW_NS = 1_000_000_000


class NvmlSource:
    """``nvml``: the pynvml module (default: imported here); tests pass a double with the same
    functions, units and error classes."""

    def __init__(self, nvml: ModuleType | None = None, clock: Callable[[], int] = time.time_ns) -> None:
        if nvml is None:
            try:
                import pynvml as nvml
            except ImportError as error:
                raise SourceError("nvidia-ml-py is not installed (pip install 'carbonspan[nvidia]')") from error
        self._nvml = nvml
        self._clock = clock
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as error:
            raise SourceError(f"NVML not available: {error}") from error
        self._handles: dict[int, object] = {}
        self._has_energy: dict[int, bool] = {}
        self._has_power: dict[int, bool] = {}
        self._gpus: list[GpuInfo] = []
        try:
            for index in range(nvml.nvmlDeviceGetCount()):
                self._add_gpu(index)
        except nvml.NVMLError as error:
            nvml.nvmlShutdown()
            raise SourceError(f"NVML could not list the GPUs: {error}") from error

    def _add_gpu(self, index: int) -> None:
        nvml = self._nvml
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        uuid = _text(nvml.nvmlDeviceGetUUID(handle))
        name = _text(nvml.nvmlDeviceGetName(handle))
        self._handles[index] = handle
        self._has_energy[index] = self._supported(nvml.nvmlDeviceGetTotalEnergyConsumption, handle)
        self._has_power[index] = self._supported(nvml.nvmlDeviceGetPowerUsage, handle)
        if not (self._has_energy[index] or self._has_power[index]):
            logger.warning("GPU %d (%s, %s) reports neither energy nor power: not sampled", index, name, uuid)
            return
        if not self._has_energy[index]:
            logger.info("GPU %d (%s) has no energy counter: integrating its power readings", index, name)
        self._gpus.append(
            GpuInfo(
                index=index,
                uuid=uuid,
                model=name,
                vendor=VENDOR_NVIDIA,
                power_window_ns=self._power_window_ns(handle),
                mig_uuids=self._mig_uuids(handle),
            )
        )

    def _supported(self, fn: Callable, handle: object) -> bool:
        try:
            fn(handle)
        except self._nvml.NVMLError_NotSupported:
            return False
        return True

    def _power_window_ns(self, handle: object) -> int:
        try:
            arch = self._nvml.nvmlDeviceGetArchitecture(handle)
        except self._nvml.NVMLError:
            return 0
        return _AMPERE_POWER_WINDOW_NS if arch >= self._nvml.NVML_DEVICE_ARCH_AMPERE else 0

    def _mig_uuids(self, handle: object) -> tuple[str, ...]:
        nvml = self._nvml
        try:
            current, _pending = nvml.nvmlDeviceGetMigMode(handle)
        except nvml.NVMLError:  # NotSupported on boards without MIG
            return ()
        if current != nvml.NVML_DEVICE_MIG_ENABLE:
            return ()
        uuids = []
        for slot in range(nvml.nvmlDeviceGetMaxMigDeviceCount(handle)):
            try:
                mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
            except nvml.NVMLError_NotFound:  # an empty slot
                continue
            uuids.append(_text(nvml.nvmlDeviceGetUUID(mig)))
        return tuple(uuids)

    def gpus(self) -> list[GpuInfo]:
        return list(self._gpus)

    def read(self, index: int) -> Reading:
        nvml = self._nvml
        handle = self._handles[index]
        time_ns = self._clock()
        energy_j = power_w = None
        asking = self._has_energy
        try:
            if self._has_energy[index]:
                energy_j = nvml.nvmlDeviceGetTotalEnergyConsumption(handle) / 1000.0  # mJ -> J
            asking = self._has_power
            if self._has_power[index]:
                power_w = nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0  # mW -> W
        except nvml.NVMLError_NotSupported as error:
            # Support can vanish (e.g. the GPU went into a mode without telemetry): stop asking.
            asking[index] = False
            if not (self._has_energy[index] or self._has_power[index]):
                raise NotSupported(f"GPU {index}: {error}") from error
        except nvml.NVMLError as error:
            raise SourceError(f"GPU {index}: {error}") from error
        return Reading(time_ns, energy_j, power_w)

    def read_energy(self, index: int) -> float | None:
        if not self._has_energy[index]:
            return None
        nvml = self._nvml
        try:
            return nvml.nvmlDeviceGetTotalEnergyConsumption(self._handles[index]) / 1000.0  # mJ -> J
        except nvml.NVMLError as error:  # NotSupported included: the next tick's read() sorts it out
            raise SourceError(f"GPU {index}: {error}") from error

    def close(self) -> None:
        try:
            self._nvml.nvmlShutdown()
        except self._nvml.NVMLError as error:
            logger.warning("nvmlShutdown failed: %s", error)


def _text(value: str | bytes) -> str:
    """Older nvidia-ml-py returns bytes for strings, newer str."""
    return value.decode() if isinstance(value, bytes) else value
