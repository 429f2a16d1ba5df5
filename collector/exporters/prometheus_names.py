"""OTLP metric and attribute names as Prometheus names, per OpenTelemetry's "Prometheus and OpenMetrics
Compatibility" spec (as the Collector's prometheus exporter applies it with ``add_metric_suffixes``):
characters outside ``[a-zA-Z0-9_:]`` become ``_``; the UCUM unit, spelt out (``J`` -> ``joules``,
``By/s`` -> ``bytes_per_second``, annotations such as ``{token}`` dropped), is appended unless the name
already ends with it; monotonic counters end in ``_total``; gauges with unit ``1`` in ``_ratio``.

carbonspan's dashboards and alert rules are written against ``semconv.PROMETHEUS_NAMES``; the tests
check that every entry comes out of this conversion unchanged.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

from carbonspan.processors import semconv

#: the spec's table of UCUM units to Prometheus words
_UNITS = {
    "d": "days", "h": "hours", "min": "minutes", "s": "seconds", "ms": "milliseconds", "us": "microseconds",
    "ns": "nanoseconds",
    "By": "bytes", "KiBy": "kibibytes", "MiBy": "mebibytes", "GiBy": "gibibytes", "TiBy": "tibibytes",
    "KBy": "kilobytes", "MBy": "megabytes", "GBy": "gigabytes", "TBy": "terabytes",
    "m": "meters", "V": "volts", "A": "amperes", "J": "joules", "W": "watts", "g": "grams",
    "Cel": "celsius", "Hz": "hertz", "1": "", "%": "percent",
    # carbonspan's own: grid intensity is grams of CO2-equivalent per kWh, the unit every grid data
    # source publishes; UCUM has no CO2e, so the metric's unit is g/kW.h and the word says what it is.
    semconv.UNIT_INTENSITY: "gco2e_per_kwh",
}
#: the denominator of ``x/y`` units
_PER_UNITS = {"s": "second", "m": "minute", "h": "hour", "d": "day", "w": "week", "mo": "month", "y": "year"}

_INVALID_NAME = re.compile(r"[^a-zA-Z0-9_:]+")
_INVALID_LABEL = re.compile(r"[^a-zA-Z0-9_]")
_ANNOTATION = re.compile(r"\{[^}]*\}")


def unit_suffix(unit: str) -> str:
    """The Prometheus word(s) for a UCUM unit; "" for none, dimensionless or annotation-only units."""
    if unit in _UNITS:
        return _UNITS[unit]
    unit = _ANNOTATION.sub("", unit).strip()
    if not unit:
        return ""
    main, _, per = unit.partition("/")
    words = [_UNITS.get(main, main)] if main else []
    if per:
        words += ["per", _PER_UNITS.get(per, _UNITS.get(per, per))]
    return _sanitize("_".join(w for w in words if w))


def _sanitize(text: str) -> str:
    return "_".join(part for part in _INVALID_NAME.sub("_", text).split("_") if part)


def metric_name(name: str, unit: str, kind: str, *, namespace: str = "", add_suffixes: bool = True) -> str:
    """``kind`` is the Prometheus type the metric becomes: counter, gauge or histogram."""
    words = [w for w in _sanitize(name).split("_") if w]
    if add_suffixes:
        suffix = unit_suffix(unit)
        if suffix and words[-len(suffix.split("_")):] != suffix.split("_"):
            words += suffix.split("_")
        if kind == "counter" and words[-1] != "total":
            words.append("total")
        if kind == "gauge" and unit == "1" and words[-1] != "ratio":
            words.append("ratio")
    result = "_".join(([_sanitize(namespace)] if namespace else []) + words)
    return f"_{result}" if result[:1].isdigit() else result


def label_name(attribute: str) -> str:
    label = _INVALID_LABEL.sub("_", semconv.prometheus_label(attribute))
    if label[:1].isdigit():
        return f"key_{label}"
    return label


def label_value(value: object) -> str:
    """Attribute values as label values: strings as they are, the rest as JSON (the spec's rule)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value, separators=(",", ":"))


def labels(attributes: Iterable[tuple[str, object]]) -> dict[str, str]:
    """Attributes whose keys collide once sanitized are joined with ``;`` in key order (the spec's rule)."""
    merged: dict[str, list[tuple[str, str]]] = {}
    for key, value in attributes:
        merged.setdefault(label_name(key), []).append((key, label_value(value)))
    return {name: ";".join(v for _, v in sorted(values)) for name, values in merged.items()}
