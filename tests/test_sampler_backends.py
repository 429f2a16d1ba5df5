"""NVML and AMD SMI backends through doubles of the real libraries (tests/sampler_doubles.py),
read by the real sampler."""

import pynvml
import pytest
from sampler_doubles import (
    AMDSMI_STATUS_BUSY,
    AmdGpu,
    Clock,
    FakeAmdSmi,
    FakeNvml,
    NvmlGpu,
)

from carbonspan.instrumentation.power.amd import AmdSmiSource
from carbonspan.instrumentation.power.energy import EVENT_RESET
from carbonspan.instrumentation.power.nvml import NvmlSource
from carbonspan.instrumentation.power.sampler import PowerSampler
from carbonspan.instrumentation.power.source import NotSupported, SourceError
from carbonspan.processors.series import CumulativeSeries

MS = 1_000_000



def test_nvml_units_identity_and_power_window():
    ampere = NvmlGpu("GPU-a", "NVIDIA A100-SXM4-80GB", energy_mj=123_456, power_mw=250_500,
                     arch=pynvml.NVML_DEVICE_ARCH_AMPERE)
    volta = NvmlGpu("GPU-v", "Tesla V100-SXM2-32GB", energy_mj=7, power_mw=40_000, arch=pynvml.NVML_DEVICE_ARCH_VOLTA)
    clock = Clock(1_700_000_000_000_000_000)
    source = NvmlSource(FakeNvml([ampere, volta]), clock)
    a, v = source.gpus()
    assert (a.uuid, a.model, a.vendor, a.power_window_ns) == ("GPU-a", "NVIDIA A100-SXM4-80GB", "nvidia", 10**9)
    assert v.power_window_ns == 0
    reading = source.read(0)
    assert reading.time_ns == clock.t
    assert reading.energy_j == pytest.approx(123.456)
    assert reading.power_w == pytest.approx(250.5)


def test_nvml_without_energy_counter_integrates_power():
    gpu = NvmlGpu("GPU-p", energy_mj=None, power_mw=200_000, arch=pynvml.NVML_DEVICE_ARCH_TURING)
    clock = Clock(1_700_000_000_000_000_000)
    source = NvmlSource(FakeNvml([gpu]), clock)
    assert source.read(0).energy_j is None
    sampler = PowerSampler(source, None, 0.1, clock)
    first = sampler.sample_once()[0]
    clock.t += 500 * MS
    gpu.power_mw = 300_000
    second = sampler.sample_once()[0]
    assert first.energy_j == 0.0 and second.start_time_ns == first.start_time_ns
    assert second.energy_j == pytest.approx(0.5 * (200 + 300) * 0.5)  # trapezoid over 0.5 s


def test_nvml_lists_mig_devices_and_skips_gpus_without_telemetry():
    mig = NvmlGpu("GPU-m", mig_mode=pynvml.NVML_DEVICE_MIG_ENABLE, mig_uuids=["MIG-1", None, "MIG-2"])
    dark = NvmlGpu("GPU-d", energy_mj=None, power_mw=None)
    source = NvmlSource(FakeNvml([mig, dark]))
    (gpu,) = source.gpus()
    assert gpu.uuid == "GPU-m" and gpu.mig_uuids == ("MIG-1", "MIG-2")


def test_nvml_missing_library_is_a_source_error():
    with pytest.raises(SourceError, match="NVML not available"):
        NvmlSource(FakeNvml([], library_present=False))


def test_nvml_energy_support_lost_falls_back_to_power_then_not_supported():
    gpu = NvmlGpu("GPU-x", energy_mj=1_000, power_mw=100_000)
    source = NvmlSource(FakeNvml([gpu]))
    gpu.energy_mj = None
    assert source.read(0).energy_j is None  # this read lost energy; the next reads power
    assert source.read(0).power_w == pytest.approx(100.0)
    gpu.power_mw = None
    with pytest.raises(NotSupported):
        source.read(0)


def test_driver_error_on_one_gpu_does_not_stop_the_others():
    good, bad = NvmlGpu("GPU-good", energy_mj=0), NvmlGpu("GPU-bad", energy_mj=0)
    clock = Clock(1_700_000_000_000_000_000)
    source = NvmlSource(FakeNvml([good, bad]), clock)
    sampler = PowerSampler(source, None, 0.1, clock)
    sampler.sample_once()
    bad.error = pynvml.NVML_ERROR_GPU_IS_LOST
    for _ in range(3):
        clock.t += 100 * MS
        good.energy_mj += 50_000
        samples = sampler.sample_once()
        assert [s.gpu.uuid for s in samples] == ["GPU-good"]
    assert sampler.stats[1].errors == 3 and sampler.stats[1].failing
    bad.error = None
    clock.t += 100 * MS
    assert len(sampler.sample_once()) == 2 and not sampler.stats[1].failing


def test_nvml_counter_reset_starts_a_new_series_that_the_collector_reads_as_a_reset():
    gpu = NvmlGpu("GPU-r", energy_mj=5_000_000)
    clock = Clock(1_700_000_000_000_000_000)
    sampler = PowerSampler(NvmlSource(FakeNvml([gpu]), clock), None, 0.1, clock)
    series = CumulativeSeries()
    samples = []
    for step, counter_mj in enumerate([5_000_000, 5_040_000, 5_080_000, 30_000, 70_000]):  # reload after step 2
        clock.t = 1_000 * MS * (step + 1)
        gpu.energy_mj = counter_mj
        (sample,) = sampler.sample_once()
        samples.append(sample)
        series.add(sample.energy_time_ns, sample.energy_j, sample.start_time_ns)
    assert [s.event for s in samples] == [None, None, None, EVENT_RESET, None]
    assert samples[3].start_time_ns == samples[2].energy_time_ns + 1
    assert [s.energy_j for s in samples] == pytest.approx([0, 40, 80, 30, 70])
    assert series.increase(samples[0].energy_time_ns, samples[-1].energy_time_ns) == pytest.approx(80 + 70)
    assert series.resets == 1 and sampler.trackers[0].resets == 1


def test_amd_energy_counts_times_resolution():
    gpu = AmdGpu("uuid-mi300", energy_counts=1_000_000, resolution_uj=15.259, current_socket_power=512)
    source = AmdSmiSource(FakeAmdSmi([gpu]))
    (info,) = source.gpus()
    assert (info.uuid, info.model, info.vendor) == ("uuid-mi300", "AMD Instinct MI300X", "amd")
    assert info.energy_wrap_j == pytest.approx(2**64 * 15.259e-6)
    reading = source.read(0)
    assert reading.energy_j == pytest.approx(15.259)
    assert reading.power_w == 512.0


def test_amd_legacy_key_and_power_fallbacks():
    legacy = AmdGpu("uuid-legacy", energy_counts=2_000_000, resolution_uj=1.0, legacy_energy_key=True,
                    average_socket_power=300)
    power_only = AmdGpu("uuid-power", energy_counts=None, average_socket_power=420)
    source = AmdSmiSource(FakeAmdSmi([legacy, power_only]))
    assert source.read(0).energy_j == pytest.approx(2.0)
    assert source.read(0).power_w == 300.0  # current_socket_power is N/A on this board
    reading = source.read(1)
    assert reading.energy_j is None and reading.power_w == 420.0


def test_amd_errors():
    gpu = AmdGpu("uuid-e", energy_counts=10)
    source = AmdSmiSource(FakeAmdSmi([gpu]))
    gpu.error = AMDSMI_STATUS_BUSY
    with pytest.raises(SourceError) as busy:
        source.read(0)
    assert not isinstance(busy.value, NotSupported)
    gpu.error = 2
    with pytest.raises(NotSupported):
        source.read(0)
