"""AMD GPUs through AMD SMI (the ``amdsmi`` Python package that ships with ROCm).

Energy: ``amdsmi_get_energy_count`` returns an accumulator in counts and its
``counter_resolution`` in microjoules per count; J = counts x resolution x 1e-6. Older amdsmi
releases (ROCm 6.0/6.1) named the accumulator ``power``; both keys are read. Where the counter
is not supported, ``amdsmi_get_power_info`` is read instead (W): ``current_socket_power`` where
the board has it (MI300), else ``average_socket_power``; AMD SMI reports "N/A" for a field the
board does not fill.

Run against the real library on a ROCm node:
``python -c "from carbonspan.instrumentation.power.amd import AmdSmiSource as S; s=S(); print(s.gpus(), s.read(0))"``
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from types import ModuleType

from carbonspan.instrumentation.power.source import VENDOR_AMD, GpuInfo, NotSupported, Reading, SourceError

logger = logging.getLogger(__name__)

# amdsmi_wrapper.AMDSMI_STATUS_NOT_SUPPORTED; compared by value so that the wrapper module (which
# loads libamd_smi.so) is not needed to classify errors.
AMDSMI_STATUS_NOT_SUPPORTED = 2
_COUNTER_BITS = 64
_POWER_KEYS = ("current_socket_power", "average_socket_power")


def _not_supported(error: Exception) -> bool:
    return getattr(error, "err_code", None) == AMDSMI_STATUS_NOT_SUPPORTED


class AmdSmiSource:
    """``amdsmi``: the amdsmi module (default: imported here); tests pass a double."""

    def __init__(self, amdsmi: ModuleType | None = None, clock: Callable[[], int] = time.time_ns) -> None:
        if amdsmi is None:
            try:
                import amdsmi
            except (ImportError, OSError) as error:  # OSError: the package is there, libamd_smi.so is not
                raise SourceError(f"AMD SMI not available: {error}") from error
        self._smi = amdsmi
        self._clock = clock
        try:
            amdsmi.amdsmi_init()
            handles = amdsmi.amdsmi_get_processor_handles()
        except amdsmi.AmdSmiException as error:
            raise SourceError(f"AMD SMI could not list the GPUs: {error}") from error
        self._handles: dict[int, object] = {}
        self._resolution_uj: dict[int, float] = {}  # index -> uJ per count, for GPUs with a counter
        self._power_key: dict[int, str] = {}  # index -> power_info field, for GPUs that report power
        self._gpus: list[GpuInfo] = []
        for index, handle in enumerate(handles):
            self._add_gpu(index, handle)

    def _add_gpu(self, index: int, handle: object) -> None:
        smi = self._smi
        uuid = smi.amdsmi_get_gpu_device_uuid(handle)
        name = smi.amdsmi_get_gpu_asic_info(handle)["market_name"]
        self._handles[index] = handle
        wrap_j = None
        try:
            resolution = float(smi.amdsmi_get_energy_count(handle)["counter_resolution"])
            self._resolution_uj[index] = resolution
            wrap_j = 2.0**_COUNTER_BITS * resolution * 1e-6
        except smi.AmdSmiLibraryException as error:
            if not _not_supported(error):
                raise
        try:
            info = smi.amdsmi_get_power_info(handle)
            key = next((k for k in _POWER_KEYS if isinstance(info.get(k), int | float) and info[k] > 0), None)
            if key:
                self._power_key[index] = key
        except smi.AmdSmiLibraryException as error:
            if not _not_supported(error):
                raise
        if index not in self._resolution_uj and index not in self._power_key:
            logger.warning("GPU %d (%s, %s) reports neither energy nor power: not sampled", index, name, uuid)
            return
        self._gpus.append(GpuInfo(index=index, uuid=uuid, model=name, vendor=VENDOR_AMD, energy_wrap_j=wrap_j))

    def gpus(self) -> list[GpuInfo]:
        return list(self._gpus)

    def read(self, index: int) -> Reading:
        smi = self._smi
        handle = self._handles[index]
        time_ns = self._clock()
        power_w = None
        try:
            energy_j = self._energy_j(index, handle)
            key = self._power_key.get(index)
            if key is not None:
                value = smi.amdsmi_get_power_info(handle)[key]
                power_w = float(value) if isinstance(value, int | float) else None  # "N/A"
        except smi.AmdSmiLibraryException as error:
            if _not_supported(error):
                raise NotSupported(f"GPU {index}: {error}") from error
            raise SourceError(f"GPU {index}: {error}") from error
        return Reading(time_ns, energy_j, power_w)

    def read_energy(self, index: int) -> float | None:
        try:
            return self._energy_j(index, self._handles[index])
        except self._smi.AmdSmiLibraryException as error:  # NotSupported included: the next tick decides
            raise SourceError(f"GPU {index}: {error}") from error

    def _energy_j(self, index: int, handle: object) -> float | None:
        resolution = self._resolution_uj.get(index)
        if resolution is None:
            return None
        count = self._smi.amdsmi_get_energy_count(handle)
        counts = count["energy_accumulator"] if "energy_accumulator" in count else count["power"]
        return counts * resolution * 1e-6

    def close(self) -> None:
        try:
            self._smi.amdsmi_shut_down()
        except self._smi.AmdSmiException as error:
            logger.warning("amdsmi_shut_down failed: %s", error)
