"""Data-centre PUE and GPU embodied carbon: the facility side of a span's footprint.

Figures come from the bundled, cited tables (``data/pue_*.csv``, ``data/embodied_gpus_*.csv``;
sources and licences in ``data/LICENSE-data.md``) and can be overridden from configuration, so an
operator who knows their own data centre's PUE or their hardware's LCA can use it instead.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from .intensity import read_data_csv

PUE_FILES = ("pue_cloud_carbon_footprint.csv", "pue_provider_disclosures.csv", "pue_green_algorithms.csv")
EMBODIED_FILES = ("embodied_gpus_ecologits.csv",)
#: provider key of the global default row in the PUE files.
ANY_PROVIDER = "*"
#: source id of values that come from the configuration rather than a table.
SOURCE_CONFIG = "config"



@dataclass(frozen=True)
class EmbodiedFigure:
    kgco2e: float
    lifetime_years: float
    source: str


@dataclass(frozen=True)
class EmbodiedRow:
    """A table row: the GPU alone, and the GPU's share of its host server where one is cited."""

    gpu: EmbodiedFigure
    host_kgco2e_per_gpu: float | None


def _pue_source(file_name: str, year: str) -> str:
    table = file_name.removeprefix("pue_").removesuffix(".csv").replace("_", "-")
    return f"{table}:{year}" if year else table


class FacilityTables:
    """PUE per provider/region and embodied carbon per GPU model.

    GPU models are canonical names ("H100 SXM", "H100 PCIe", "H200", "A100 SXM", "A100 PCIe",
    "L40S", "L4", "A10", "MI300X", "MI250X", "B200"); only those with a cited figure have a row.

    PUE resolution: ``provider/region`` row, else the provider's row, else the global default.
    """

    def __init__(self, pue_by_key: Mapping[str, tuple[float, str]], embodied: Mapping[str, EmbodiedFigure]):
        if ANY_PROVIDER not in pue_by_key:
            raise ValueError(f"PUE table needs a global default (key {ANY_PROVIDER!r})")
        self._pue = dict(pue_by_key)
        self._embodied = dict(embodied)

    @classmethod
    def default(cls, include_host_share: bool = False) -> FacilityTables:
        """The bundled tables. ``include_host_share`` adds each GPU's share of its host server."""
        embodied = {}
        for model, row in _bundled_embodied().items():
            if include_host_share and row.host_kgco2e_per_gpu is not None:
                embodied[model] = replace(row.gpu, kgco2e=row.gpu.kgco2e + row.host_kgco2e_per_gpu,
                                          source=f"{row.gpu.source}+host-share")
            else:
                embodied[model] = row.gpu
        return cls(_bundled_pue(), embodied)

    @classmethod
    def from_config(cls, mapping: Mapping[str, Any] | None) -> FacilityTables:
        """Bundled tables with overrides. Keys (all optional)::

            include_host_share: false     # add the GPU's share of its host server's embodied carbon
            pue:                          # "default" | provider | "provider/region" -> PUE
              default: 1.4
              aws: 1.12
              aws/us-east-1: 1.08
            embodied:                     # canonical GPU model -> figure (partial when the model is known)
              H100 SXM: {kgco2e: 200, lifetime_years: 5}

        Raises ``ValueError`` naming the first bad key.
        """
        cfg = dict(mapping or {})
        unknown = set(cfg) - {"include_host_share", "pue", "embodied"}
        if unknown:
            raise ValueError(f"facility: unknown key {sorted(unknown)[0]!r}")
        include_host_share = cfg.get("include_host_share", False)
        if not isinstance(include_host_share, bool):
            raise ValueError("facility.include_host_share: must be true or false")
        tables = cls.default(include_host_share)
        return tables.with_overrides(cfg.get("pue") or {}, cfg.get("embodied") or {})

    def with_overrides(self, pue: Mapping[str, Any], embodied: Mapping[str, Any]) -> FacilityTables:
        pue_by_key = dict(self._pue)
        for key, value in pue.items():
            name = ANY_PROVIDER if key == "default" else str(key).lower()
            pue_by_key[name] = (_number(value, f"facility.pue.{key}", 1.0), SOURCE_CONFIG)
        figures = dict(self._embodied)
        for model, spec in embodied.items():
            figures[model] = _embodied_override(model, spec, figures.get(model))
        return FacilityTables(pue_by_key, figures)

    def pue(self, provider: str | None, region: str | None) -> tuple[float, str]:
        provider = (provider or "").lower()
        if provider and region and (found := self._pue.get(f"{provider}/{region.lower()}")):
            return found
        return self._pue.get(provider) or self._pue[ANY_PROVIDER]

    def embodied(self, gpu_model: str | None) -> EmbodiedFigure | None:
        return self._embodied.get(gpu_model) if gpu_model else None


def _number(value: Any, key: str, minimum: float, *, exclusive: bool = False) -> float:
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if not is_number or value < minimum or (exclusive and value == minimum):
        raise ValueError(f"{key}: expected a number {'>' if exclusive else '>='} {minimum}, got {value!r}")
    return float(value)


def _embodied_override(model: str, spec: Any, known: EmbodiedFigure | None) -> EmbodiedFigure:
    key = f"facility.embodied.{model}"
    if not isinstance(spec, Mapping):
        raise ValueError(f"{key}: expected a mapping with kgco2e and lifetime_years")
    unknown = set(spec) - {"kgco2e", "lifetime_years"}
    if unknown:
        raise ValueError(f"{key}: unknown key {sorted(unknown)[0]!r}")
    if known is None and not {"kgco2e", "lifetime_years"} <= set(spec):
        raise ValueError(f"{key}: no bundled figure for this model, give both kgco2e and lifetime_years")
    base = known or EmbodiedFigure(0.0, 0.0, SOURCE_CONFIG)
    return EmbodiedFigure(
        kgco2e=_number(spec["kgco2e"], f"{key}.kgco2e", 0.0) if "kgco2e" in spec else base.kgco2e,
        lifetime_years=(_number(spec["lifetime_years"], f"{key}.lifetime_years", 0.0, exclusive=True)
                        if "lifetime_years" in spec else base.lifetime_years),
        source=SOURCE_CONFIG,
    )


@functools.cache
def _bundled_pue() -> dict[str, tuple[float, str]]:
    table: dict[str, tuple[float, str]] = {}
    for file_name in PUE_FILES:
        for row in read_data_csv(file_name):
            key = f"{row['provider']}/{row['region']}" if row["region"] else row["provider"]
            if key in table:
                raise ValueError(f"{file_name}: PUE for {key!r} is also in another table")
            table[key] = (float(row["pue"]), _pue_source(file_name, row["year"]))
    return table


@functools.cache
def _bundled_embodied() -> dict[str, EmbodiedRow]:
    rows = {}
    for file_name in EMBODIED_FILES:
        table = file_name.removeprefix("embodied_gpus_").removesuffix(".csv")
        for row in read_data_csv(file_name):
            model = row["gpu_model"]
            figure = EmbodiedFigure(float(row["kgco2e"]), float(row["lifetime_years"]), f"{table}:{model}")
            host = float(row["host_kgco2e_per_gpu"]) if row["host_kgco2e_per_gpu"] else None
            rows[model] = EmbodiedRow(figure, host)
    return rows
