"""PUE and embodied-carbon lookups against the bundled rows, and configuration overrides."""

from __future__ import annotations

import pytest

from carbonspan.processors.facility import EmbodiedFigure, FacilityTables
from carbonspan.processors.intensity import read_data_csv


def test_pue_region_then_provider_then_global_default():
    tables = FacilityTables.default()
    assert tables.pue("gcp", "europe-west4") == (1.07, "cloud-carbon-footprint")
    assert tables.pue("gcp", "me-central2") == (1.1, "cloud-carbon-footprint")
    assert tables.pue("aws", "eu-north-1") == (1.15, "provider-disclosures:2024")
    assert tables.pue("azure", "westeurope") == (1.185, "cloud-carbon-footprint")
    assert tables.pue("oracle_cloud", "us-ashburn-1") == (1.2, "green-algorithms")
    assert tables.pue(None, None) == (1.56, "green-algorithms:2024")
    assert tables.pue("on-prem", "rack-7") == (1.56, "green-algorithms:2024")


def test_pue_values_are_the_bundled_rows():
    rows = read_data_csv("pue_cloud_carbon_footprint.csv")
    tables = FacilityTables.default()
    for row in rows:
        assert tables.pue(row["provider"], row["region"] or "any")[0] == float(row["pue"])


def test_embodied_figures_gpu_only_and_with_host_share():
    (h100,) = [r for r in read_data_csv("embodied_gpus_ecologits.csv") if r["gpu_model"] == "H100 SXM"]
    gpu_only = FacilityTables.default().embodied("H100 SXM")
    assert gpu_only == EmbodiedFigure(float(h100["kgco2e"]), 3.0, "ecologits:H100 SXM")
    assert gpu_only.kgco2e == 164.0
    with_host = FacilityTables.default(include_host_share=True).embodied("H100 SXM")
    assert with_host.kgco2e == 164.0 + 5700 / 8
    assert FacilityTables.default().embodied("A100 SXM").kgco2e == 143.0
    assert FacilityTables.default().embodied("L4") is None
    assert FacilityTables.default().embodied(None) is None


def test_config_overrides_pue_and_embodied():
    tables = FacilityTables.from_config({
        "pue": {"default": 1.3, "aws": 1.12, "aws/us-east-1": 1.08},
        "embodied": {"H100 SXM": {"lifetime_years": 5}, "L40S": {"kgco2e": 120, "lifetime_years": 4}},
    })
    assert tables.pue("aws", "us-east-1") == (1.08, "config")
    assert tables.pue("aws", "us-west-2") == (1.12, "config")
    assert tables.pue("gcp", "us-east4") == (1.08, "cloud-carbon-footprint")  # untouched rows stay
    assert tables.pue("unknown", None) == (1.3, "config")
    assert tables.embodied("H100 SXM") == EmbodiedFigure(164.0, 5.0, "config")
    assert tables.embodied("L40S") == EmbodiedFigure(120.0, 4.0, "config")


@pytest.mark.parametrize(("cfg", "message"), [
    ({"pu": {}}, "'pu'"),
    ({"pue": {"aws": 0.9}}, "facility.pue.aws"),
    ({"pue": {"aws": "fast"}}, "facility.pue.aws"),
    ({"embodied": {"L4": {"kgco2e": 50}}}, "facility.embodied.L4"),
    ({"embodied": {"H100 SXM": {"lifetime_years": 0}}}, "lifetime_years"),
    ({"embodied": {"H100 SXM": {"kg": 1}}}, "'kg'"),
    ({"include_host_share": "yes"}, "include_host_share"),
])
def test_bad_config_names_the_key(cfg, message):
    with pytest.raises(ValueError, match=message):
        FacilityTables.from_config(cfg)
