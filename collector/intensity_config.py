"""Builds the intensity provider and facility tables from the carbon processor's configuration.

Keys (YAML, all optional; ``${env:NAME}`` is substituted by the config loader before this runs)::

    intensity:
      provider: table    # table (default) | csv | electricitymaps | watttime | uk_carbon_intensity
      region_zones:                  # cloud region -> grid zone, overriding the bundled mapping
        aws/us-east-1: US-MIDA-PJM   #   "provider/region" or bare "region" keys
        europe-west1: BE
      csv:
        paths: [grid/de-2024.csv]    # timestamp_utc,zone,gco2e_per_kwh (hourly or half-hourly)
      electricitymaps:
        endpoint: https://api.electricitymap.org
        api_key: ${env:ELECTRICITYMAPS_API_KEY}
        ttl: 300s                    # refetch after; durations: seconds or "500ms", "5s", "5m", "1h"
        timeout: 5s                  # whole request
      watttime:
        endpoint: https://api.watttime.org
        username: ${env:WATTTIME_USERNAME}
        password: ${env:WATTTIME_PASSWORD}
        signal_type: co2_moer
        regions: {US-CAL-CISO: CAISO_NORTH}   # grid zone, "provider/region" or "region" -> WattTime region
        ttl: 300s
        timeout: 5s
      uk_carbon_intensity:
        endpoint: https://api.carbonintensity.org.uk
        ttl: 1800s
        timeout: 5s
    facility:                        # see FacilityTables.from_config
      include_host_share: false
      pue: {default: 1.56, aws: 1.15, aws/us-east-1: 1.1}
      embodied: {"H100 SXM": {kgco2e: 164, lifetime_years: 3}}

A live provider comes back stopped: the collector calls ``start()`` when the pipeline starts and
``stop()`` on shutdown. Live and CSV providers fall back on the static table, which uses
``region_zones`` too. Errors are ``ValueError`` naming the key (``intensity.csv.paths`` …).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from collections.abc import Set as AbstractSet
from typing import Any

from carbonspan.collector.intensity_live import (
    ELECTRICITYMAPS_ENDPOINT,
    UK_CARBON_INTENSITY_ENDPOINT,
    WATTTIME_ENDPOINT,
    ElectricityMapsSource,
    LiveIntensityProvider,
    LiveSource,
    UkCarbonIntensitySource,
    WattTimeSource,
)
from carbonspan.processors.facility import FacilityTables
from carbonspan.processors.intensity import CsvTimeSeriesProvider, IntensityProvider, StaticTableProvider

PROVIDERS = ("table", "csv", "electricitymaps", "watttime", "uk_carbon_intensity")
LIVE_DEFAULTS = {"ttl": 300.0, "timeout": 5.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration_s(value: Any, key: str) -> float:
    """Seconds from a number or a string like ``"300s"``, ``"500ms"``, ``"5m"``, ``"1h"``."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _UNIT_S[match.group(2)]
    else:
        raise ValueError(f"{key}: expected a duration such as 5s or 300, got {value!r}")
    if seconds <= 0:
        raise ValueError(f"{key}: must be greater than 0, got {value!r}")
    return seconds


def _section(cfg: Mapping[str, Any], name: str, allowed: AbstractSet[str],
             required: AbstractSet[str] = frozenset()) -> dict[str, Any]:
    section = cfg.get(name) or {}
    key = f"intensity.{name}"
    if not isinstance(section, Mapping):
        raise ValueError(f"{key}: expected a mapping")
    unknown = set(section) - allowed
    if unknown:
        raise ValueError(f"{key}: unknown key {sorted(unknown)[0]!r}")
    missing = required - {k for k, v in section.items() if v not in (None, "")}
    if missing:
        raise ValueError(f"{key}.{sorted(missing)[0]}: required for provider {name}")
    return dict(section)


def _string_map(value: Any, key: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(v, str) and v for v in value.values()):
        raise ValueError(f"{key}: expected a mapping of names to non-empty strings")
    return {str(k): v for k, v in value.items()}


def _live(section: dict[str, Any], name: str, source: LiveSource, table: StaticTableProvider
          ) -> LiveIntensityProvider:
    timing = {k: parse_duration_s(section.get(k, default), f"intensity.{name}.{k}") for k, default in
              LIVE_DEFAULTS.items()}
    return LiveIntensityProvider(source, table, ttl_s=timing["ttl"], timeout_s=timing["timeout"])


def _csv(cfg: Mapping[str, Any], table: StaticTableProvider) -> IntensityProvider:
    paths = _section(cfg, "csv", {"paths"}, {"paths"})["paths"]
    if isinstance(paths, str):
        paths = [paths]
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise ValueError("intensity.csv.paths: expected a list of file paths")
    try:
        return CsvTimeSeriesProvider.from_files(paths, table)
    except OSError as exc:
        raise ValueError(f"intensity.csv.paths: {exc}") from exc


def _electricitymaps(cfg: Mapping[str, Any], table: StaticTableProvider) -> IntensityProvider:
    section = _section(cfg, "electricitymaps", {"endpoint", "api_key", *LIVE_DEFAULTS})
    endpoint = section.get("endpoint") or ELECTRICITYMAPS_ENDPOINT
    source = ElectricityMapsSource(endpoint, section.get("api_key"))
    return _live(section, "electricitymaps", source, table)


def _watttime(cfg: Mapping[str, Any], table: StaticTableProvider) -> IntensityProvider:
    section = _section(cfg, "watttime", {"endpoint", "username", "password", "signal_type", "regions",
                                         *LIVE_DEFAULTS}, {"username", "password", "regions"})
    source = WattTimeSource(
        str(section["username"]), str(section["password"]),
        _string_map(section["regions"], "intensity.watttime.regions"),
        endpoint=section.get("endpoint") or WATTTIME_ENDPOINT,
        signal_type=section.get("signal_type") or "co2_moer",
    )
    return _live(section, "watttime", source, table)


def _uk_carbon_intensity(cfg: Mapping[str, Any], table: StaticTableProvider) -> IntensityProvider:
    section = _section(cfg, "uk_carbon_intensity", {"endpoint", *LIVE_DEFAULTS})
    source = UkCarbonIntensitySource(section.get("endpoint") or UK_CARBON_INTENSITY_ENDPOINT)
    return _live(section, "uk_carbon_intensity", source, table)


_BUILDERS: dict[str, Callable[[Mapping[str, Any], StaticTableProvider], IntensityProvider]] = {
    "table": lambda cfg, table: table,
    "csv": _csv,
    "electricitymaps": _electricitymaps,
    "watttime": _watttime,
    "uk_carbon_intensity": _uk_carbon_intensity,
}


def intensity_provider_from_config(cfg: Mapping[str, Any] | None) -> IntensityProvider:
    """The provider the ``intensity`` section asks for (the static table when it is empty)."""
    cfg = cfg or {}
    if not isinstance(cfg, Mapping):
        raise ValueError("intensity: expected a mapping")
    unknown = set(cfg) - {"provider", "region_zones", *PROVIDERS[1:]}
    if unknown:
        raise ValueError(f"intensity: unknown key {sorted(unknown)[0]!r}")
    provider = cfg.get("provider") or "table"
    if provider not in _BUILDERS:
        raise ValueError(f"intensity.provider: {provider!r} is not one of {', '.join(PROVIDERS)}")
    table = StaticTableProvider(_string_map(cfg.get("region_zones"), "intensity.region_zones"))
    return _BUILDERS[provider](cfg, table)


def facility_from_config(cfg: Mapping[str, Any] | None) -> FacilityTables:
    """PUE and embodied tables from the ``facility`` section (bundled tables when it is empty)."""
    return FacilityTables.from_config(cfg)
