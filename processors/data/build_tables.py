"""Regenerates the intensity tables in this folder from the research dataset (/work/shared/data).

Kept next to the tables so that anyone can see that the only transformation is column selection
and splitting by licence: each output file holds rows of ONE licence, as ODbL (Electricity Maps)
and CC BY-SA (Ember) must not be mixed with the Apache-2.0 cloud-region rows.
Usage: python processors/data/build_tables.py /path/to/shared/data
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

HERE = Path(__file__).parent
ZONE_COLUMNS = ["zone", "gco2e_per_kwh", "year", "source", "license"]
HOURLY_SAMPLE = ("em_DE_2023_hourly.csv", "2023-01-", "intensity_hourly_electricitymaps_DE_2023-01.csv")
HOURLY_SAMPLE_SOURCE = ("Electricity Maps data portal via "
                        "satrai-lab/cozybench@33371464e32a:models/carbon_intensity/DE_2023_hourly.csv")


def _write(name: str, columns: list[str], rows: list[dict[str, str]]) -> None:
    with open(HERE / name, "w", newline="") as out:
        writer = csv.DictWriter(out, columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    print(f"{name}: {len(rows)} rows")


def build(src: Path) -> None:
    regions = list(csv.DictReader(open(src / "regions.csv")))
    _write("intensity_cloud_regions.csv",
           ["provider", "region", "grid_zone", "gco2e_per_kwh", "year", "source", "license"], regions)

    zones = list(csv.DictReader(open(src / "zones.csv")))
    electricitymaps = [dict(z, license="ODbL-1.0") for z in zones if z["zone_scheme"] == "electricitymaps"]
    ember = [dict(z, license="CC-BY-SA-4.0") for z in zones if z["zone_scheme"] != "electricitymaps"]
    _write("intensity_zones_electricitymaps.csv", ZONE_COLUMNS, electricitymaps)
    _write("intensity_countries_ember.csv", ZONE_COLUMNS, ember)

    hourly_file, prefix, out_name = HOURLY_SAMPLE
    hourly = [dict(r, source=HOURLY_SAMPLE_SOURCE, license="ODbL-1.0")
              for r in csv.DictReader(open(src / "hourly" / hourly_file))
              if r["timestamp_utc"].startswith(prefix)]
    _write(out_name, ["timestamp_utc", "zone", "gco2e_per_kwh", "source", "license"], hourly)


if __name__ == "__main__":
    build(Path(sys.argv[1]))
