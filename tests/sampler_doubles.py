"""Test doubles of NVML (nvidia-ml-py) and AMD SMI (amdsmi): the functions the backends call,
with the real names, units, return shapes and error classes, over GPUs whose state a test sets.

The NVML double reuses the real ``pynvml`` module's error classes and constants (the package
imports without a GPU; only its calls need the driver). ``amdsmi`` cannot be imported without
libamd_smi.so, so its double reproduces the exception classes and the documented dict keys of
amdsmi 7.0 (``amdsmi_interface.py``): ``amdsmi_get_energy_count`` -> energy_accumulator (counts),
counter_resolution (uJ per count), timestamp; ``amdsmi_get_power_info`` -> *_socket_power (W) with
"N/A" for fields the board does not fill.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pynvml


class Clock:
    """An injected clock (ns) that a test moves by hand."""

    def __init__(self, t: int = 0) -> None:
        self.t = t

    def __call__(self) -> int:
        return self.t


@dataclass
class NvmlGpu:
    uuid: str
    name: str = "NVIDIA H100 80GB HBM3"
    energy_mj: int | None = 0  # None: NotSupported
    power_mw: int | None = 0
    arch: int = pynvml.NVML_DEVICE_ARCH_HOPPER
    mig_mode: int | None = None  # None: MIG not supported
    mig_uuids: list[str | None] = field(default_factory=list)  # None: an empty slot
    error: int | None = None  # an NVML_ERROR_* that every read raises


class FakeNvml:
    """Stands in for the ``pynvml`` module."""

    def __init__(self, gpus: list[NvmlGpu], library_present: bool = True) -> None:
        for name in dir(pynvml):
            if name.startswith(("NVMLError", "NVML_")):
                setattr(self, name, getattr(pynvml, name))
        self.gpus = gpus
        self.library_present = library_present
        self.initialised = False

    def nvmlInit(self) -> None:
        if not self.library_present:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
        self.initialised = True

    def nvmlShutdown(self) -> None:
        self.initialised = False

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> NvmlGpu:
        return self.gpus[index]

    def nvmlDeviceGetUUID(self, handle) -> str:
        return handle.uuid if isinstance(handle, NvmlGpu) else handle

    def nvmlDeviceGetName(self, handle: NvmlGpu) -> str:
        return handle.name

    @staticmethod
    def _value(handle: NvmlGpu, value: int | None) -> int:
        if handle.error is not None:
            raise pynvml.NVMLError(handle.error)
        if value is None:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return value

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: NvmlGpu) -> int:
        return self._value(handle, handle.energy_mj)  # mJ

    def nvmlDeviceGetPowerUsage(self, handle: NvmlGpu) -> int:
        return self._value(handle, handle.power_mw)  # mW

    def nvmlDeviceGetArchitecture(self, handle: NvmlGpu) -> int:
        return handle.arch

    def nvmlDeviceGetMigMode(self, handle: NvmlGpu) -> list[int]:
        if handle.mig_mode is None:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return [handle.mig_mode, handle.mig_mode]

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: NvmlGpu) -> int:
        return len(handle.mig_uuids)

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: NvmlGpu, index: int) -> str:
        mig = handle.mig_uuids[index]
        if mig is None:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)
        return mig


# ---------------------------------------------------------------------------------------------- AMD SMI
AMDSMI_STATUS_NOT_SUPPORTED = 2
AMDSMI_STATUS_BUSY = 45


class AmdSmiException(Exception):
    pass


class AmdSmiLibraryException(AmdSmiException):
    def __init__(self, err_code: int) -> None:
        err_code = abs(err_code)
        super().__init__(err_code)
        self.err_code = err_code


@dataclass
class AmdGpu:
    uuid: str
    market_name: str = "AMD Instinct MI300X"
    energy_counts: int | None = 0  # None: NotSupported
    resolution_uj: float = 15.259
    current_socket_power: int | str = "N/A"
    average_socket_power: int | str = 0
    power_supported: bool = True
    legacy_energy_key: bool = False  # ROCm 6.0/6.1 called the accumulator "power"
    error: int | None = None


class FakeAmdSmi:
    """Stands in for the ``amdsmi`` module."""

    AmdSmiException = AmdSmiException
    AmdSmiLibraryException = AmdSmiLibraryException

    def __init__(self, gpus: list[AmdGpu]) -> None:
        self.gpus = gpus
        self.initialised = False

    def amdsmi_init(self) -> None:
        self.initialised = True

    def amdsmi_shut_down(self) -> None:
        self.initialised = False

    def amdsmi_get_processor_handles(self) -> list[AmdGpu]:
        return list(self.gpus)

    def amdsmi_get_gpu_device_uuid(self, handle: AmdGpu) -> str:
        return handle.uuid

    def amdsmi_get_gpu_asic_info(self, handle: AmdGpu) -> dict:
        return {"market_name": handle.market_name, "vendor_id": "0x1002", "vendor_name": "Advanced Micro Devices Inc."}

    def amdsmi_get_energy_count(self, handle: AmdGpu) -> dict:
        if handle.error is not None:
            raise AmdSmiLibraryException(handle.error)
        if handle.energy_counts is None:
            raise AmdSmiLibraryException(AMDSMI_STATUS_NOT_SUPPORTED)
        key = "power" if handle.legacy_energy_key else "energy_accumulator"
        return {key: handle.energy_counts, "counter_resolution": handle.resolution_uj, "timestamp": 0}

    def amdsmi_get_power_info(self, handle: AmdGpu) -> dict:
        if handle.error is not None:
            raise AmdSmiLibraryException(handle.error)
        if not handle.power_supported:
            raise AmdSmiLibraryException(AMDSMI_STATUS_NOT_SUPPORTED)
        return {
            "socket_power": handle.current_socket_power,
            "current_socket_power": handle.current_socket_power,
            "average_socket_power": handle.average_socket_power,
            "gfx_voltage": "N/A",
            "soc_voltage": "N/A",
            "mem_voltage": "N/A",
            "power_limit": 750,
        }
