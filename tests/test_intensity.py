"""Static table and CSV time-series providers, checked against the bundled CSV rows themselves."""

from __future__ import annotations

import csv
from datetime import UTC, datetime

import pytest

from carbonspan.processors.intensity import (
    CLOUD_REGIONS_FILE,
    ELECTRICITYMAPS_FILE,
    EMBER_FILE,
    SAMPLE_HOURLY_FILE,
    CsvTimeSeriesProvider,
    GridLocation,
    StaticTableProvider,
    data_path,
    read_data_csv,
)

T0 = 1_700_000_000 * 10**9


def ns(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()) * 10**9


def latest_row(file_name: str, zone: str) -> dict[str, str]:
    rows = [r for r in read_data_csv(file_name) if r["zone"] == zone]
    return max(rows, key=lambda r: int(r["year"]))


def region_row(provider: str, region: str) -> dict[str, str]:
    rows = read_data_csv(CLOUD_REGIONS_FILE)
    (row,) = [r for r in rows if (r["provider"], r["region"]) == (provider, region)]
    return row


@pytest.fixture(scope="module")
def table() -> StaticTableProvider:
    return StaticTableProvider()


def test_explicit_zone_returns_the_latest_electricitymaps_row(table):
    row = latest_row(ELECTRICITYMAPS_FILE, "FR")
    reading = table.intensity(GridLocation("aws", "us-east-1", "FR"), T0)
    assert reading.gco2e_per_kwh == float(row["gco2e_per_kwh"])
    assert (reading.source, reading.zone, reading.year, reading.fallback) == (
        f"electricitymaps-yearly:{row['year']}", "FR", int(row["year"]), False)


def test_gcp_region_uses_googles_own_figure(table):
    row = region_row("gcp", "us-west1")
    reading = table.intensity(GridLocation("gcp", "us-west1", None), T0)
    assert reading.gco2e_per_kwh == float(row["gco2e_per_kwh"]) == 79.23
    assert reading.source == "gcp-region-carbon-info:2024" and not reading.fallback


def test_aws_region_goes_through_its_grid_zone(table):
    zone = region_row("aws", "us-east-1")["grid_zone"]
    assert zone == "US-MIDA-PJM"
    row = latest_row(ELECTRICITYMAPS_FILE, zone)
    reading = table.intensity(GridLocation("aws", "us-east-1", None), T0)
    assert (reading.gco2e_per_kwh, reading.zone) == (float(row["gco2e_per_kwh"]), zone)
    assert reading.source == f"electricitymaps-yearly:{row['year']}"


def test_azure_region_names_are_case_insensitive(table):
    # CCF spells it "EastUS"; OTel resource detectors write "eastus".
    assert table.intensity(GridLocation("azure", "eastus", None), T0).zone == "US-MIDA-PJM"


def test_unmapped_region_uses_the_ccf_factor(table):
    row = region_row("aws", "cn-north-1")
    assert row["grid_zone"] == ""
    reading = table.intensity(GridLocation("aws", "cn-north-1", None), T0)
    assert reading.gco2e_per_kwh == float(row["gco2e_per_kwh"]) == 537.4
    assert reading.source == "cloud-carbon-footprint:2021" and reading.zone is None


def test_configured_region_zone_map_overrides_the_bundled_mapping():
    table = StaticTableProvider({"gcp/us-west1": "US-NW-BPAT", "eu-west-1": "GB"})
    bpat = latest_row(ELECTRICITYMAPS_FILE, "US-NW-BPAT")
    reading = table.intensity(GridLocation("gcp", "us-west1", None), T0)
    assert (reading.gco2e_per_kwh, reading.zone) == (float(bpat["gco2e_per_kwh"]), "US-NW-BPAT")
    assert table.intensity(GridLocation("aws", "eu-west-1", None), T0).zone == "GB"
    # the node's own zone beats the configured map
    assert table.intensity(GridLocation("aws", "eu-west-1", "FR"), T0).zone == "FR"


def test_ember_country_code_and_country_of_an_unknown_subzone(table):
    deu = latest_row(EMBER_FILE, "DEU")
    reading = table.intensity(GridLocation(None, None, "DEU"), T0)
    assert (reading.gco2e_per_kwh, reading.source) == (float(deu["gco2e_per_kwh"]), f"ember:{deu['year']}")
    us = latest_row(ELECTRICITYMAPS_FILE, "US")
    reading = table.intensity(GridLocation(None, None, "US-NOT-A-ZONE"), T0)
    assert (reading.gco2e_per_kwh, reading.zone) == (float(us["gco2e_per_kwh"]), "US")
    assert not reading.fallback


@pytest.mark.parametrize("location", [
    GridLocation("aws", "ap-south-2", None),  # newer than CCF's list
    GridLocation("moon", "mare-tranquillitatis", "LUNA"),
    GridLocation(None, None, None),
])
def test_unknown_location_falls_back_to_world_flagged(table, location):
    world = latest_row(EMBER_FILE, "World")
    reading = table.intensity(location, T0)
    assert reading.gco2e_per_kwh == float(world["gco2e_per_kwh"]) == 472.94
    assert (reading.source, reading.zone, reading.fallback) == ("ember:2024", "World", True)


def test_every_bundled_file_holds_one_licence_and_cites_each_row():
    for path in sorted(data_path("").glob("*.csv")):
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        assert rows, path.name
        assert len({r["license"] for r in rows}) == 1, path.name
        assert all(r["source"] for r in rows), path.name
        assert path.name in data_path("LICENSE-data.md").read_text(), path.name


def test_csv_provider_picks_the_hour_containing_the_instant():
    provider = CsvTimeSeriesProvider.from_files([data_path(SAMPLE_HOURLY_FILE)])
    rows = {r["timestamp_utc"]: float(r["gco2e_per_kwh"]) for r in read_data_csv(SAMPLE_HOURLY_FILE)}
    de = GridLocation(None, None, "DE")
    for hour in ("2023-01-01T00:00:00", "2023-01-15T13:00:00", "2023-01-31T23:00:00"):
        start = ns(hour)
        for offset_s in (0, 1799, 3599):
            reading = provider.intensity(de, start + offset_s * 10**9)
            assert reading.gco2e_per_kwh == rows[hour + "Z"], (hour, offset_s)
            assert (reading.source, reading.zone, reading.year, reading.fallback) == (
                "csv:intensity_hourly_electricitymaps_DE_2023-01", "DE", 2023, False)
    # the step function changes exactly on the hour
    second_hour = provider.intensity(de, ns("2023-01-01T01:00:00")).gco2e_per_kwh
    assert second_hour == rows["2023-01-01T01:00:00Z"] != rows["2023-01-01T00:00:00Z"]


def test_csv_provider_falls_back_to_the_table_outside_the_series():
    provider = CsvTimeSeriesProvider.from_files([data_path(SAMPLE_HOURLY_FILE)])
    de = GridLocation(None, None, "DE")
    table_de = latest_row(ELECTRICITYMAPS_FILE, "DE")
    for instant in (ns("2022-12-31T23:59:59"), ns("2023-02-01T00:00:00")):
        reading = provider.intensity(de, instant)
        assert reading.fallback and reading.gco2e_per_kwh == float(table_de["gco2e_per_kwh"])
    # a zone the files do not cover: the table, flagged
    reading = provider.intensity(GridLocation("gcp", "us-west1", None), ns("2023-01-02T00:00:00"))
    assert (reading.gco2e_per_kwh, reading.fallback) == (79.23, True)


def test_csv_provider_merges_zones_and_files_and_knows_gaps(tmp_path):
    first = tmp_path / "grid_a.csv"
    first.write_text("timestamp_utc,zone,gco2e_per_kwh\n"
                     "2024-03-01T00:00:00Z,GB,100\n2024-03-01T00:30:00Z,GB,110\n"
                     "2024-03-01T00:00:00Z,US-MIDA-PJM,400\n")
    second = tmp_path / "grid_b.csv"
    second.write_text("timestamp_utc,zone,gco2e_per_kwh\n2024-03-01T02:00:00Z,GB,130\n")
    provider = CsvTimeSeriesProvider.from_files([first, second])
    gb = GridLocation("aws", "eu-west-2", None)  # mapped to GB by the bundled table
    assert provider.intensity(gb, ns("2024-03-01T00:45:00")).gco2e_per_kwh == 110  # half-hourly resolution
    assert provider.intensity(gb, ns("2024-03-01T02:10:00")).source == "csv:grid_b"
    assert provider.intensity(gb, ns("2024-03-01T01:15:00")).fallback  # the missing hour is a gap
    pjm = provider.intensity(GridLocation("aws", "us-east-1", None), ns("2024-03-01T00:59:59"))
    assert (pjm.gco2e_per_kwh, pjm.source) == (400, "csv:grid_a")


def test_csv_provider_rejects_missing_columns_and_conflicting_duplicates(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("time,zone,value\n2024-01-01T00:00:00Z,GB,1\n")
    with pytest.raises(ValueError, match="gco2e_per_kwh"):
        CsvTimeSeriesProvider.from_files([bad])
    twice = tmp_path / "twice.csv"
    twice.write_text("timestamp_utc,zone,gco2e_per_kwh\n2024-01-01T00:00:00Z,GB,1\n2024-01-01T00:00:00Z,GB,2\n")
    with pytest.raises(ValueError, match="GB"):
        CsvTimeSeriesProvider.from_files([twice])
