"""Grid carbon intensity (gCO2e/kWh) for a node's location at a time: the providers the join uses.

Every reading names the table row or series it came from (``source``), so a span's CO2 can be
traced back to a published figure. The bundled tables are split by licence into separate files
under ``data/`` (see ``data/LICENSE-data.md``); this module only reads them.

Pure logic: no sockets, threads or clock reads. Live HTTP providers live in
``carbonspan.collector.intensity_live`` and fall back on :class:`StaticTableProvider`.
"""

from __future__ import annotations

import bisect
import csv
import dataclasses
import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.resources import files
from pathlib import Path
from typing import NamedTuple, Protocol

#: short ids written to ``carbon.intensity.source`` (with ``:<year>`` when the row has one).
SOURCE_GCP = "gcp-region-carbon-info"
SOURCE_CCF = "cloud-carbon-footprint"
SOURCE_ELECTRICITYMAPS_YEARLY = "electricitymaps-yearly"
SOURCE_EMBER = "ember"
SOURCE_CSV = "csv"
#: Ember's world average: the last resort when nothing is known about a location.
WORLD_ZONE = "World"
#: cloud provider whose own per-region figure is preferred over the mapped grid zone.
GCP = "gcp"

CLOUD_REGIONS_FILE = "intensity_cloud_regions.csv"
ELECTRICITYMAPS_FILE = "intensity_zones_electricitymaps.csv"
EMBER_FILE = "intensity_countries_ember.csv"
#: a January of hourly Electricity Maps values for DE, shipped as an example of the CSV format.
SAMPLE_HOURLY_FILE = "intensity_hourly_electricitymaps_DE_2023-01.csv"

_NS_PER_S = 1_000_000_000
_RESOLVE_CACHE_SIZE = 4096
#: interval of a one-point series (the shared format is hourly).
_DEFAULT_STEP_NS = 3600 * _NS_PER_S


class GridLocation(NamedTuple):
    """Where a node draws its power. A named tuple, not a dataclass: providers look readings up by it
    (``lru_cache``) for every span, and a tuple hashes in C where a dataclass's ``__hash__`` is a
    Python call."""

    provider: str | None  # resource cloud.provider (OTel values: "aws", "gcp", "azure")
    region: str | None  # resource cloud.region
    zone: str | None  # resource carbon.grid.zone, if the node sets it (overrides mapping)


@dataclass(frozen=True)
class IntensityReading:
    gco2e_per_kwh: float
    source: str  # short stable id of the row/provider used, e.g. "electricitymaps-yearly:2024"
    zone: str | None  # grid zone the figure is for (the join writes it to carbon.grid.zone)
    fallback: bool = False  # True when the configured source could not answer and a table value stands in
    year: int | None = None


class IntensityProvider(Protocol):
    def intensity(self, location: GridLocation, time_ns: int) -> IntensityReading: ...


def data_path(name: str) -> Path:
    """Path of a bundled data file (package data, installed next to this module)."""
    return Path(str(files("carbonspan.processors").joinpath("data", name)))


def read_data_csv(name: str) -> list[dict[str, str]]:
    with data_path(name).open(newline="") as f:
        return list(csv.DictReader(f))


def lookup_by_region(mapping: Mapping[str, str], provider: str | None, region: str | None) -> str | None:
    """Value configured for ``provider/region``, else for the bare ``region`` (keys compared lower-case)."""
    if not region:
        return None
    region = region.lower()
    if provider and (found := mapping.get(f"{provider.lower()}/{region}")) is not None:
        return found
    return mapping.get(region)


def normalise_region_keys(mapping: Mapping[str, str] | None) -> dict[str, str]:
    return {str(key).lower(): str(value) for key, value in (mapping or {}).items()}


def _source_id(kind: str, year: int | None) -> str:
    return f"{kind}:{year}" if year is not None else kind


def _year(text: str) -> int | None:
    return int(text) if text else None


@dataclass(frozen=True)
class RegionRow:
    grid_zone: str | None
    reading: IntensityReading


@dataclass(frozen=True)
class IntensityTables:
    """The bundled tables, indexed for dict lookups."""

    regions: Mapping[tuple[str, str], RegionRow]  # (provider, region) lower-case
    electricitymaps: Mapping[str, IntensityReading]  # zone -> latest year
    ember: Mapping[str, IntensityReading]  # ISO-3166 alpha-3 country or aggregate ("World")

    @classmethod
    @functools.cache
    def bundled(cls) -> IntensityTables:
        return cls(
            regions=_region_rows(read_data_csv(CLOUD_REGIONS_FILE)),
            electricitymaps=_latest_per_zone(
                read_data_csv(ELECTRICITYMAPS_FILE), SOURCE_ELECTRICITYMAPS_YEARLY),
            ember=_latest_per_zone(read_data_csv(EMBER_FILE), SOURCE_EMBER),
        )


def _region_rows(rows: Iterable[dict[str, str]]) -> dict[tuple[str, str], RegionRow]:
    indexed = {}
    for row in rows:
        provider, year, zone = row["provider"], _year(row["year"]), row["grid_zone"] or None
        kind = SOURCE_GCP if provider == GCP else SOURCE_CCF
        reading = IntensityReading(float(row["gco2e_per_kwh"]), _source_id(kind, year), zone, year=year)
        indexed[(provider.lower(), row["region"].lower())] = RegionRow(zone, reading)
    return indexed


def _latest_per_zone(rows: Iterable[dict[str, str]], kind: str) -> dict[str, IntensityReading]:
    latest: dict[str, IntensityReading] = {}
    for row in rows:
        zone, year = row["zone"], _year(row["year"])
        known = latest.get(zone)
        if known is None or (year or 0) > (known.year or 0):
            value = float(row["gco2e_per_kwh"])
            latest[zone] = IntensityReading(value, _source_id(kind, year), zone, year=year)
    return latest


class StaticTableProvider:
    """Offline default: yearly averages from the bundled tables; the value does not depend on time.

    Resolution, first hit wins:
    1. the node's ``carbon.grid.zone``, else the configured region -> zone map, looked up in the
       Electricity Maps zone-years (latest year), then in Ember's countries/aggregates;
    2. the cloud region's own row: GCP regions use Google's published per-region figure; AWS and
       Azure regions follow the region's grid zone (Cloud Carbon Footprint's mapping) into the
       Electricity Maps latest year, as data/README recommends over CCF's 2020-era factors, and
       use the CCF factor only where the region has no mapped zone;
    3. the country of the zone (Electricity Maps two-letter zone, e.g. ``US`` for ``US-XX-YY``);
    4. Ember ``World``, flagged ``fallback=True``.
    """

    def __init__(self, region_zones: Mapping[str, str] | None = None, tables: IntensityTables | None = None):
        self._region_zones = normalise_region_keys(region_zones)
        self._tables = tables or IntensityTables.bundled()
        self._resolve = functools.lru_cache(maxsize=_RESOLVE_CACHE_SIZE)(self._resolve_uncached)
        self._grid_zone = functools.lru_cache(maxsize=_RESOLVE_CACHE_SIZE)(self._grid_zone_uncached)
        self._fallback = functools.lru_cache(maxsize=_RESOLVE_CACHE_SIZE)(self._fallback_uncached)

    def intensity(self, location: GridLocation, time_ns: int) -> IntensityReading:
        return self._resolve(location)

    def fallback(self, location: GridLocation) -> IntensityReading:
        """The table value standing in for a provider that could not answer."""
        return self._fallback(location)

    def _fallback_uncached(self, location: GridLocation) -> IntensityReading:
        return dataclasses.replace(self._resolve(location), fallback=True)

    def grid_zone(self, location: GridLocation) -> str | None:
        """The zone a location is in: explicit, configured, or the cloud region's mapped zone."""
        return self._grid_zone(location)

    def _grid_zone_uncached(self, location: GridLocation) -> str | None:
        configured = self._configured_zone(location)
        if configured:
            return configured
        row = self._region_row(location)
        return row.grid_zone if row else None

    def _configured_zone(self, location: GridLocation) -> str | None:
        return location.zone or lookup_by_region(self._region_zones, location.provider, location.region)

    def _region_row(self, location: GridLocation) -> RegionRow | None:
        if not location.provider or not location.region:
            return None
        return self._tables.regions.get((location.provider.lower(), location.region.lower()))

    def _zone_reading(self, zone: str) -> IntensityReading | None:
        return self._tables.electricitymaps.get(zone) or self._tables.ember.get(zone)

    def _resolve_uncached(self, location: GridLocation) -> IntensityReading:
        zone = self._configured_zone(location)
        if zone and (reading := self._zone_reading(zone)):
            return reading
        row = self._region_row(location)
        if row is not None:
            mapped = None if location.provider.lower() == GCP or not row.grid_zone else row.grid_zone
            if mapped and (reading := self._tables.electricitymaps.get(mapped)):
                return reading
            return row.reading
        if zone and (reading := self._tables.electricitymaps.get(zone.split("-")[0])):
            return reading
        return dataclasses.replace(self._tables.ember[WORLD_ZONE], fallback=True)


@dataclass(frozen=True)
class _Series:
    """One zone's step function: value ``values[i]`` holds over [starts[i], starts[i] + step_ns)."""

    starts: list[int]
    values: list[float]
    sources: list[str]
    years: list[int]
    step_ns: int


def _timestamp_ns(text: str) -> int:
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return round(moment.timestamp() * _NS_PER_S)


def _build_series(points: list[tuple[int, float, str]], zone: str) -> _Series:
    points.sort()
    for before, after in zip(points, points[1:], strict=False):
        if before[0] == after[0] and before[1] != after[1]:
            moment = datetime.fromtimestamp(before[0] / _NS_PER_S, UTC)
            raise ValueError(f"zone {zone}: two different values for {moment.isoformat()}")
    gaps = [b[0] - a[0] for a, b in zip(points, points[1:], strict=False) if b[0] > a[0]]
    step_ns = min(gaps) if gaps else _DEFAULT_STEP_NS
    years = [datetime.fromtimestamp(p[0] / _NS_PER_S, UTC).year for p in points]
    return _Series([p[0] for p in points], [p[1] for p in points], [p[2] for p in points], years, step_ns)


class CsvTimeSeriesProvider:
    """Hourly (or half-hourly) intensity from CSV files ``timestamp_utc,zone,gco2e_per_kwh``.

    The value for an instant is that of the interval containing it (timestamps mark interval
    starts; an interval lasts the series' resolution, its smallest step, so a missing hour is a
    gap, not a stretch of the previous value). Outside a series, or for a zone no file covers,
    the static table answers with ``fallback=True``. Zones are resolved as the static table does.
    """

    def __init__(self, points: Iterable[SeriesPoint], fallback: StaticTableProvider):
        by_zone: dict[str, list[tuple[int, float, str]]] = {}
        for point in points:
            by_zone.setdefault(point.zone, []).append((point.start_ns, point.gco2e_per_kwh, point.source))
        self._series = {zone: _build_series(zone_points, zone) for zone, zone_points in by_zone.items()}
        self._static = fallback

    @classmethod
    def from_files(cls, paths: Iterable[str | Path], fallback: StaticTableProvider | None = None
                   ) -> CsvTimeSeriesProvider:
        """Series from one or more files, each with any number of zones; source ``csv:<file stem>``."""
        points = [point for path in paths for point in read_series_csv(Path(path))]
        return cls(points, fallback or StaticTableProvider())

    def intensity(self, location: GridLocation, time_ns: int) -> IntensityReading:
        zone = self._static.grid_zone(location)
        series = self._series.get(zone) if zone else None
        if series is not None:
            i = bisect.bisect_right(series.starts, time_ns) - 1
            if i >= 0 and time_ns < series.starts[i] + series.step_ns:
                return IntensityReading(series.values[i], series.sources[i], zone, year=series.years[i])
        return self._static.fallback(location)


@dataclass(frozen=True)
class SeriesPoint:
    zone: str
    start_ns: int
    gco2e_per_kwh: float
    source: str


def read_series_csv(path: Path) -> list[SeriesPoint]:
    source = _source_id(SOURCE_CSV, path.stem)
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = {"timestamp_utc", "zone", "gco2e_per_kwh"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
        return [
            SeriesPoint(row["zone"], _timestamp_ns(row["timestamp_utc"]), float(row["gco2e_per_kwh"]), source)
            for row in reader
        ]
