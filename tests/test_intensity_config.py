"""Building intensity providers and facility tables from the YAML-style configuration."""

from __future__ import annotations

import pytest
import yaml

from carbonspan.collector.intensity_config import (
    facility_from_config,
    intensity_provider_from_config,
    parse_duration_s,
)
from carbonspan.processors.intensity import (
    SAMPLE_HOURLY_FILE,
    CsvTimeSeriesProvider,
    GridLocation,
    StaticTableProvider,
    data_path,
)

T_JAN_2023 = 1_673_000_000 * 10**9  # 2023-01-06T10:13:20Z


def test_empty_config_is_the_static_table():
    assert isinstance(intensity_provider_from_config(None), StaticTableProvider)
    assert isinstance(intensity_provider_from_config({}), StaticTableProvider)


def test_region_zones_apply_to_the_table_and_the_csv_provider():
    cfg = yaml.safe_load(f"""
        provider: csv
        region_zones: {{"gcp/europe-west3": DE}}
        csv: {{paths: ["{data_path(SAMPLE_HOURLY_FILE)}"]}}
    """)
    provider = intensity_provider_from_config(cfg)
    assert isinstance(provider, CsvTimeSeriesProvider)
    reading = provider.intensity(GridLocation("gcp", "europe-west3", None), T_JAN_2023)
    assert (reading.zone, reading.source, reading.fallback) == (
        "DE", "csv:intensity_hourly_electricitymaps_DE_2023-01", False)


@pytest.mark.parametrize(("text", "seconds"), [("300s", 300), ("500ms", 0.5), ("5m", 300), ("1h", 3600),
                                               (2, 2), (0.25, 0.25), ("7", 7)])
def test_durations(text, seconds):
    assert parse_duration_s(text, "k") == seconds


@pytest.mark.parametrize(("cfg", "message"), [
    ({"providr": "table"}, "'providr'"),
    ({"provider": "carbonara"}, "intensity.provider"),
    ({"region_zones": {"aws/us-east-1": 3}}, "intensity.region_zones"),
    ({"provider": "csv"}, "intensity.csv.paths"),
    ({"provider": "csv", "csv": {"paths": ["/nonexistent/grid.csv"]}}, "intensity.csv.paths"),
    ({"provider": "electricitymaps", "electricitymaps": {"ttl": "soon"}}, "intensity.electricitymaps.ttl"),
    ({"provider": "electricitymaps", "electricitymaps": {"timeout": "0s"}}, "electricitymaps.timeout"),
    ({"provider": "electricitymaps", "electricitymaps": {"apikey": "x"}}, "'apikey'"),
    ({"provider": "watttime", "watttime": {"username": "u", "password": "p"}}, "intensity.watttime.regions"),
    ({"provider": "uk_carbon_intensity", "uk_carbon_intensity": ["GB"]}, "intensity.uk_carbon_intensity"),
])
def test_bad_config_names_the_key(cfg, message):
    with pytest.raises(ValueError, match=message):
        intensity_provider_from_config(cfg)


def test_facility_from_config():
    tables = facility_from_config({"pue": {"aws/us-east-1": 1.1}})
    assert tables.pue("aws", "us-east-1") == (1.1, "config")
    assert facility_from_config(None).pue("aws", "us-east-1") == (1.15, "provider-disclosures:2024")
