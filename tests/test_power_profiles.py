import pytest

from carbonspan.processors.gpu_profiles import known_models, normalize_gpu_model, power_profile


@pytest.mark.parametrize(
    ("driver_name", "canonical"),
    [
        ("NVIDIA H100 80GB HBM3", "H100 SXM"),
        ("NVIDIA H100 PCIe", "H100 PCIe"),
        ("NVIDIA H200", "H200"),
        ("NVIDIA A100-SXM4-80GB", "A100 SXM"),
        ("NVIDIA A100-SXM4-40GB", "A100 SXM"),
        ("NVIDIA A100 80GB PCIe", "A100 PCIe"),
        ("NVIDIA A100-PCIE-40GB", "A100 PCIe"),
        ("NVIDIA L40S", "L40S"),
        ("NVIDIA L4", "L4"),
        ("NVIDIA A10", "A10"),
        ("NVIDIA B200", "B200"),
        ("AMD Instinct MI300X", "MI300X"),
        ("AMD Instinct MI250X/MI250", "MI250X"),
        ("h100 sxm", "H100 SXM"),
    ],
)
def test_driver_names_map_to_canonical_models(driver_name, canonical):
    assert normalize_gpu_model(driver_name) == canonical


@pytest.mark.parametrize("name", ["NVIDIA L40", "NVIDIA A10G", "NVIDIA H100 NVL", "Tesla T4", "A100", ""])
def test_boards_without_figures_are_not_mistaken_for_neighbours(name):
    assert normalize_gpu_model(name) is None
    assert power_profile(name) is None


def test_every_canonical_model_has_a_sourced_profile_and_maps_to_itself():
    assert set(known_models()) == {
        "H100 SXM", "H100 PCIe", "H200", "A100 SXM", "A100 PCIe", "L40S", "L4", "A10", "MI300X", "MI250X",
        "B200",
    }
    for model in known_models():
        profile = power_profile(model)
        assert normalize_gpu_model(model) == model
        assert 0 < profile.idle_w < profile.max_w
        assert "http" in profile.source and "idle" in profile.source


def test_datasheet_figures_and_linear_power_model():
    h100 = power_profile("NVIDIA H100 80GB HBM3")
    assert (h100.vendor, h100.max_w) == ("NVIDIA", 700.0)
    assert power_profile("MI300X").max_w == 750.0
    assert power_profile("L4").max_w == 72.0
    assert h100.power_at(0.0) == h100.idle_w
    assert h100.power_at(0.5) == pytest.approx((h100.idle_w + 700.0) / 2)
