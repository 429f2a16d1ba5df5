"""The collector's config file, in the OpenTelemetry Collector's schema.

``receivers``, ``processors``, ``exporters`` and ``extensions`` define components by id
(``type`` or ``type/name``); ``service.pipelines`` wires them into ``traces`` and ``metrics``
pipelines and ``service.extensions`` turns extensions on. Values may use ``${env:NAME}`` and
``${env:NAME:-default}`` (``$$`` is a literal ``$``); a value that is one reference alone takes
the type its text has in YAML, as in the Collector (``${env:PORT}`` -> int).

Everything is checked at load time, so that a typo fails ``carbonspan validate`` and the start of
the service rather than the first request: errors are ConfigError with the dotted key and the
line of the file it is on.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from carbonspan.collector import pipeline_settings as components
from carbonspan.collector.config_values import as_mapping, check_known_keys
from carbonspan.collector.errors import ConfigError
from carbonspan.collector.exporters.base import Exporter

SIGNALS = ("traces", "metrics")
SECTIONS = ("receivers", "processors", "exporters", "extensions", "service")
_ENV = re.compile(r"\$\$|\$\{env:([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
#: a constructor for scalar nodes (YAML's own typing of 1, true, 1.5, "x"); holds no state between calls.
_SCALARS = yaml.SafeLoader("")
_ID = re.compile(r"^[A-Za-z0-9_]+(/[A-Za-z0-9_.\-]+)?$")


@dataclass(frozen=True)
class Component:
    """One configured component: its id, type and validated settings (type-specific object)."""

    id: str
    type: str
    settings: Any


@dataclass(frozen=True)
class Pipeline:
    id: str  # "traces", "metrics/prometheus"
    signal: str
    receivers: tuple[str, ...]
    processors: tuple[str, ...]
    exporters: tuple[str, ...]


@dataclass(frozen=True)
class Telemetry:
    log_level: str = "info"
    metrics_enabled: bool = True
    metrics_interval_ns: int = 10 * 10**9


@dataclass(frozen=True)
class CollectorConfig:
    source: str
    receivers: dict[str, Component]
    processors: dict[str, Component]
    exporters: dict[str, Component]
    extensions: dict[str, Component]
    service_extensions: tuple[str, ...]
    pipelines: dict[str, Pipeline]
    telemetry: Telemetry = field(default_factory=Telemetry)


def load_config(path: str | os.PathLike, environ: Mapping[str, str] = os.environ, *,
                exporter_types: Mapping[str, type[Exporter]] | None = None) -> CollectorConfig:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("", f"cannot read config: {exc.strerror or exc}", source=str(path)) from exc
    return load_config_text(text, environ, source=str(path), exporter_types=exporter_types)


def load_config_text(text: str, environ: Mapping[str, str] = os.environ, source: str = "<string>", *,
                     exporter_types: Mapping[str, type[Exporter]] | None = None) -> CollectorConfig:
    """``exporter_types`` replaces ``EXPORTER_TYPES`` (tests register recording exporters)."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise ConfigError("", f"not valid YAML: {getattr(exc, 'problem', None) or exc}", source=source,
                          line=line) from exc
    lines: dict[str, int] = {}
    data = _construct(node, "", lines, environ) if node is not None else {}
    try:
        return _build(data, source, components.exporter_factories(exporter_types))
    except ConfigError as exc:
        raise ConfigError(exc.key, exc.message, source=source, line=_line_of(exc.key, lines)) from exc


# ---------------------------------------------------------------------- YAML with lines and env
def _construct(node: yaml.Node, key: str, lines: dict[str, int], environ: Mapping[str, str]) -> Any:
    """Python data from a composed node, noting each dotted key's line and substituting env refs."""
    lines.setdefault(key, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            name = str(_SCALARS.construct_object(key_node))
            child = f"{key}.{name}" if key else name
            if name in out:
                raise ConfigError(child, "key appears twice", line=key_node.start_mark.line + 1)
            lines[child] = key_node.start_mark.line + 1
            out[name] = _construct(value_node, child, lines, environ)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(item, f"{key}[{i}]", lines, environ) for i, item in enumerate(node.value)]
    value = _SCALARS.construct_object(node)
    return _substitute(value, key, environ) if isinstance(value, str) else value


def _substitute(value: str, key: str, environ: Mapping[str, str]) -> Any:
    whole = _ENV.fullmatch(value)
    parts: list[str] = []

    def replace(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        found = environ.get(name)
        if found is None or (found == "" and default is not None):
            found = default if default is not None else ""
        parts.append(found)
        return found

    text = _ENV.sub(replace, value)
    if whole is not None and whole.group(0) != "$$":
        if text == "":
            return None  # unset variable alone: the key is as good as absent
        try:
            parsed = yaml.safe_load(text)
        except yaml.YAMLError:
            return text
        return parsed if isinstance(parsed, str | int | float | bool) else text
    return text


def _line_of(key: str, lines: Mapping[str, int]) -> int | None:
    while key:
        if key in lines:
            return lines[key]
        cut = max(key.rfind("."), key.rfind("["))
        key = key[:cut] if cut > 0 else ""
    return lines.get("")


# ---------------------------------------------------------------------- schema
def _components(data: Mapping[str, Any], section: str,
                factories: Mapping[str, Callable[[str, dict[str, Any], dict[str, Any]], Any]],
                context: dict[str, Any]) -> dict[str, Component]:
    out = {}
    for component_id, settings in as_mapping(data.get(section), section).items():
        key = f"{section}.{component_id}"
        if not _ID.match(component_id):
            raise ConfigError(key, "a component id is type or type/name (letters, digits, _)")
        kind = component_id.split("/", 1)[0]
        factory = factories.get(kind)
        if factory is None:
            raise ConfigError(key, f"unknown {section[:-1]} type {kind!r}; known: {', '.join(sorted(factories))}")
        try:
            parsed = factory(component_id, as_mapping(settings, key), context)
        except ConfigError as exc:
            raise exc.within(key) from exc
        out[component_id] = Component(component_id, kind, parsed)
    return out


def _names(value: Any, key: str, defined: Mapping[str, Component], section: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(key, f"expected a list of {section} ids")
    for i, name in enumerate(value):
        if name not in defined:
            raise ConfigError(f"{key}[{i}]", f"{section[:-1]} {name!r} is not defined under {section}")
        if value.index(name) != i:
            raise ConfigError(f"{key}[{i}]", f"{name!r} is listed twice")
    return tuple(value)


def _check_shared(pipelines: Mapping[str, Pipeline], processors: Mapping[str, Component]) -> None:
    """A carbon processor is one join: the spans it releases must go back to the one traces
    pipeline they came from (it may also sit in metrics pipelines, which feed it energy data)."""
    seen: dict[str, str] = {}
    for pipeline in pipelines.values():
        if pipeline.signal != "traces":
            continue
        for i, processor_id in enumerate(pipeline.processors):
            if processors[processor_id].type != "carbon":
                continue
            if processor_id in seen:
                raise ConfigError(f"service.pipelines.{pipeline.id}.processors[{i}]",
                                  f"carbon processor {processor_id!r} is already in traces pipeline "
                                  f"{seen[processor_id]!r}; define another carbon/<name> for this one")
            seen[processor_id] = pipeline.id


def _telemetry(data: dict[str, Any]) -> Telemetry:
    from carbonspan.collector.config_values import parse_duration_ns

    section = as_mapping(data, "service.telemetry")
    check_known_keys(section, {"logs", "metrics"}, "service.telemetry")
    logs = as_mapping(section.get("logs"), "service.telemetry.logs")
    check_known_keys(logs, {"level"}, "service.telemetry.logs")
    level = str(logs.get("level", "info")).lower()
    if level not in ("debug", "info", "warn", "warning", "error"):
        raise ConfigError("service.telemetry.logs.level", f"expected debug, info, warn or error, got {level!r}")
    metrics = as_mapping(section.get("metrics"), "service.telemetry.metrics")
    check_known_keys(metrics, {"level", "interval"}, "service.telemetry.metrics")
    metrics_level = str(metrics.get("level", "basic")).lower()
    if metrics_level not in ("none", "basic", "normal", "detailed"):
        raise ConfigError("service.telemetry.metrics.level", f"expected none, basic, normal or detailed, "
                                                             f"got {metrics_level!r}")
    interval = parse_duration_ns("service.telemetry.metrics.interval", metrics.get("interval", "10s"))
    if interval <= 0:
        raise ConfigError("service.telemetry.metrics.interval", "must be greater than 0")
    return Telemetry(log_level=level, metrics_enabled=metrics_level != "none", metrics_interval_ns=interval)


def _build(data: Any, source: str, exporter_factories: Mapping[str, Callable]) -> CollectorConfig:
    data = as_mapping(data, "")
    check_known_keys(data, set(SECTIONS))
    if "service" not in data:
        raise ConfigError("service", "required: service.pipelines says what runs")
    context: dict[str, Any] = {}
    extensions = _components(data, "extensions", components.EXTENSIONS, context)
    context["extensions"] = extensions
    receivers = _components(data, "receivers", components.RECEIVERS, context)
    processors = _components(data, "processors", components.PROCESSORS, context)
    exporters = _components(data, "exporters", exporter_factories, context)

    service = as_mapping(data["service"], "service")
    check_known_keys(service, {"extensions", "pipelines", "telemetry"}, "service")
    service_extensions = _names(service.get("extensions"), "service.extensions", extensions, "extensions")
    pipelines_data = as_mapping(service.get("pipelines"), "service.pipelines")
    if not pipelines_data:
        raise ConfigError("service.pipelines", "at least one pipeline (traces or metrics) is required")
    pipelines = {}
    for pipeline_id, body in pipelines_data.items():
        key = f"service.pipelines.{pipeline_id}"
        signal = pipeline_id.split("/", 1)[0]
        if signal not in SIGNALS:
            raise ConfigError(key, f"a pipeline id starts with traces or metrics, got {pipeline_id!r}")
        body = as_mapping(body, key)
        check_known_keys(body, {"receivers", "processors", "exporters"}, key)
        pipeline = Pipeline(
            id=pipeline_id, signal=signal,
            receivers=_names(body.get("receivers"), f"{key}.receivers", receivers, "receivers"),
            processors=_names(body.get("processors"), f"{key}.processors", processors, "processors"),
            exporters=_names(body.get("exporters"), f"{key}.exporters", exporters, "exporters"),
        )
        for part in ("receivers", "exporters"):
            if not getattr(pipeline, part):
                raise ConfigError(f"{key}.{part}", "a pipeline needs at least one")
        for i, exporter_id in enumerate(pipeline.exporters):
            supported = components.exporter_signals(exporters[exporter_id])
            if signal not in supported:
                raise ConfigError(f"{key}.exporters[{i}]", f"{exporter_id!r} does not take {signal}")
        for i, processor_id in enumerate(pipeline.processors):
            if signal not in components.processor_signals(processors[processor_id]):
                raise ConfigError(f"{key}.processors[{i}]", f"{processor_id!r} does not process {signal}")
        pipelines[pipeline_id] = pipeline
    _check_shared(pipelines, processors)
    return CollectorConfig(
        source=source, receivers=receivers, processors=processors, exporters=exporters, extensions=extensions,
        service_extensions=service_extensions, pipelines=pipelines,
        telemetry=_telemetry(service.get("telemetry")),
    )
