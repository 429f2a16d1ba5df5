"""Settings of each component type the collector knows, parsed and checked from its config section.

One parser per type: it reads the section (env already substituted) through ``Section``, the same
reader the exporters use, which rejects bad values and unknown keys with ConfigError (key relative
to the section), and returns a frozen settings object that the service builds the running
component from. Exporters are the exporters module's own: their settings are checked by
constructing them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from carbonspan.collector.config_values import Section
from carbonspan.collector.errors import ConfigError
from carbonspan.collector.exporters.base import Exporter
from carbonspan.processors.attribution import POLICIES, POLICY_TOKENS
from carbonspan.processors.join import IDLE_POLICIES, IDLE_REPORT, JoinSettings
from carbonspan.processors.metric_filter import MetricFilter, NameMatch
from carbonspan.processors.rollup import RollupSettings

MIB = 1024 * 1024
DEFAULT_GRPC_ENDPOINT = "127.0.0.1:4317"
DEFAULT_HTTP_ENDPOINT = "127.0.0.1:4318"
DEFAULT_HEALTH_ENDPOINT = "127.0.0.1:13133"


def _from_value_error(exc: ValueError) -> ConfigError:
    """ConfigError from the ``"key.path: message"`` ValueErrors of the intensity and facility parsers."""
    key, sep, message = str(exc).partition(": ")
    if not sep or " " in key:
        return ConfigError("", str(exc))
    unknown = re.fullmatch(r"unknown key '([^']+)'", message)
    if unknown:
        return ConfigError(f"{key}.{unknown.group(1)}", "unknown key")
    return ConfigError(key, message)


# ---------------------------------------------------------------------- extensions
@dataclass(frozen=True)
class HealthCheckSettings:
    host: str
    port: int
    path: str = "/"


@dataclass(frozen=True)
class BearerTokenSettings:
    token: str
    scheme: str = "Bearer"

    def expected_header(self) -> str:
        return f"{self.scheme} {self.token}"


@dataclass(frozen=True)
class FileStorageSettings:
    directory: str


def _health_check(component_id: str, data: dict[str, Any], context: dict[str, Any]) -> HealthCheckSettings:
    section = Section(data)
    host, port = section.endpoint("endpoint", DEFAULT_HEALTH_ENDPOINT)
    path = str(section.raw("path", "/"))
    if not path.startswith("/"):
        raise ConfigError("path", f"must start with /, got {path!r}")
    section.check_unknown()
    return HealthCheckSettings(host, port, path)


def _bearer_token(component_id: str, data: dict[str, Any], context: dict[str, Any]) -> BearerTokenSettings:
    section = Section(data)
    settings = BearerTokenSettings(section.required_string("token"), str(section.raw("scheme", "Bearer")))
    section.check_unknown()
    return settings


def _file_storage(component_id: str, data: dict[str, Any], context: dict[str, Any]) -> FileStorageSettings:
    section = Section(data)
    settings = FileStorageSettings(section.required_string("directory"))
    section.check_unknown()
    return settings


EXTENSIONS: dict[str, Callable[[str, dict[str, Any], dict[str, Any]], Any]] = {
    "health_check": _health_check,
    "bearertokenauth": _bearer_token,
    "file_storage": _file_storage,
}


# ---------------------------------------------------------------------- receivers
@dataclass(frozen=True)
class TlsSettings:
    cert_file: str
    key_file: str


@dataclass(frozen=True)
class ServerSettings:
    host: str
    port: int
    max_bytes: int
    tls: TlsSettings | None = None
    token: BearerTokenSettings | None = None  # from the auth.authenticator extension


@dataclass(frozen=True)
class OtlpReceiverSettings:
    grpc: ServerSettings | None
    http: ServerSettings | None


def _server(section: Section, default_endpoint: str, size_keys: dict[str, int],
            extensions: Mapping[str, Any]) -> ServerSettings:
    host, port = section.endpoint("endpoint", default_endpoint)
    max_bytes = 4 * MIB
    for key, unit in size_keys.items():
        size = section.positive(key)
        if size is not None:
            max_bytes = int(size * unit)
    tls = None
    if section.has("tls"):
        tls_section = section.section("tls")
        tls = TlsSettings(tls_section.required_string("cert_file"), tls_section.required_string("key_file"))
    token = None
    if section.has("auth"):
        auth = section.section("auth")
        name = auth.required_string("authenticator")
        extension = extensions.get(name)
        if extension is None or extension.type != "bearertokenauth":
            raise ConfigError(auth.key("authenticator"),
                              f"{name!r} is not a bearertokenauth extension under extensions")
        token = extension.settings
    return ServerSettings(host, port, max_bytes, tls, token)


def _otlp_receiver(component_id: str, data: dict[str, Any], context: dict[str, Any]) -> OtlpReceiverSettings:
    section = Section(data)
    protocols = section.section("protocols")
    extensions = context.get("extensions", {})
    servers: dict[str, ServerSettings | None] = {"grpc": None, "http": None}
    for name, default, sizes in (("grpc", DEFAULT_GRPC_ENDPOINT, {"max_recv_msg_size_mib": MIB}),
                                 ("http", DEFAULT_HTTP_ENDPOINT, {"max_request_body_size": 1,
                                                                  "max_recv_msg_size_mib": MIB})):
        if name in protocols:
            servers[name] = _server(protocols.section(name), default, sizes, extensions)
    section.check_unknown()
    if not any(servers.values()):
        raise ConfigError("protocols", "name at least one of grpc, http")
    return OtlpReceiverSettings(**servers)


RECEIVERS: dict[str, Callable[[str, dict[str, Any], dict[str, Any]], Any]] = {"otlp": _otlp_receiver}


# ---------------------------------------------------------------------- processors
@dataclass(frozen=True)
class CarbonSettings:
    join: JoinSettings
    intensity: Mapping[str, Any]
    facility: Mapping[str, Any]


@dataclass(frozen=True)
class BatchSettings:
    send_batch_size: int = 8192
    timeout_ns: int = 200 * 10**6


@dataclass(frozen=True)
class MemoryLimiterSettings:
    limit_spans: int | None = None
    limit_bytes: int | None = None
    retry_after_s: int = 5


def _carbon(component_id: str, data: dict[str, Any], context: dict[str, Any]) -> CarbonSettings:
    from carbonspan.collector.intensity_config import facility_from_config, intensity_provider_from_config

    section = Section(data)
    policy = section.raw("policy", POLICY_TOKENS)
    if policy not in POLICIES:
        raise ConfigError("policy", f"expected one of {', '.join(POLICIES)}, got {policy!r}")
    idle = section.raw("idle", IDLE_REPORT)
    if idle not in IDLE_POLICIES:
        raise ConfigError("idle", f"expected one of {', '.join(IDLE_POLICIES)}, got {idle!r}")
    deadline = section.duration_ns("deadline", "10s")
    retention = section.duration_ns("retention", "15m", allow_zero=False)
    gap = section.duration_ns("gap", "2s", allow_zero=False)
    regions = []
    for i, entry in enumerate(section.raw("counterfactual_regions") or []):
        provider, sep, region = str(entry).partition("/")
        if not sep or not provider or not region:
            raise ConfigError(f"counterfactual_regions[{i}]", f"expected provider/region, got {entry!r}")
        regions.append((provider, region))
    join = JoinSettings(policy=policy, deadline_ns=deadline, retention_ns=retention, gap_ns=gap,
                        gpu_models=section.string_map("gpu_models"), counterfactual_regions=tuple(regions), idle=idle)
    intensity, facility = section.mapping("intensity"), section.mapping("facility")
    section.check_unknown()
    try:
        intensity_provider_from_config(intensity)  # checked now; built again, fresh, by the service
        facility_from_config(facility)
    except ValueError as exc:
        raise _from_value_error(exc) from exc
    return CarbonSettings(join, intensity, facility)


def _rollup(component_id: str, data: dict[str, Any], context: dict[str, Any]) -> RollupSettings:
    section = Section(data)
    settle = section.duration_ns("settle", "5s")
    idle = section.duration_ns("idle_timeout", "30s")
    if idle < settle:
        raise ConfigError("idle_timeout", "must be at least settle")
    max_traces = section.positive_int("max_traces", 200_000)
    section.check_unknown()
    return RollupSettings(settle_ns=settle, idle_timeout_ns=idle, max_traces=max_traces)


def _batch(component_id: str, data: dict[str, Any], context: dict[str, Any]) -> BatchSettings:
    section = Section(data)
    settings = BatchSettings(section.positive_int("send_batch_size", 8192), section.duration_ns("timeout", "200ms"))
    section.check_unknown()
    return settings


def _memory_limiter(component_id: str, data: dict[str, Any], context: dict[str, Any]) -> MemoryLimiterSettings:
    section = Section(data)
    spans, mib = section.positive_int("limit_spans", None), section.positive("limit_mib")
    if spans is None and mib is None:
        raise ConfigError("limit_spans", "set limit_spans, limit_mib or both")
    retry = section.duration_ns("retry_after", "5s")
    section.check_unknown()
    return MemoryLimiterSettings(
        limit_spans=spans,
        limit_bytes=int(mib * MIB) if mib is not None else None,
        retry_after_s=max(1, round(retry / 10**9)),
    )


def _filter(component_id: str, data: dict[str, Any], context: dict[str, Any]) -> MetricFilter:
    """The Collector filter processor's metric name matching (``metrics.include`` /
    ``metrics.exclude``); its OTTL conditions and span and log filters are not offered."""
    section = Section(data)
    metrics = section.section("metrics")
    matches: dict[str, NameMatch] = {}
    for side in ("include", "exclude"):
        if not metrics.has(side):
            continue
        match = metrics.section(side)
        names = match.raw("metric_names")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
            raise ConfigError(match.key("metric_names"), f"expected a list of metric names, got {names!r}")
        try:
            matches[side] = NameMatch(match.raw("match_type"), tuple(names))
        except re.error as exc:
            raise ConfigError(match.key("metric_names"), f"not a regular expression: {exc}") from exc
        except ValueError as exc:
            raise ConfigError(match.key("match_type"), str(exc)) from exc
    section.check_unknown()
    if not matches:
        raise ConfigError("metrics", "set metrics.include, metrics.exclude or both")
    return MetricFilter(**matches)


PROCESSORS: dict[str, Callable[[str, dict[str, Any], dict[str, Any]], Any]] = {
    "carbon": _carbon,
    "carbon_rollup": _rollup,
    "batch": _batch,
    "memory_limiter": _memory_limiter,
    "filter": _filter,
}
_PROCESSOR_SIGNALS = {"carbon_rollup": frozenset({"traces"}), "filter": frozenset({"metrics"})}


def processor_signals(component: Any) -> frozenset[str]:
    return _PROCESSOR_SIGNALS.get(component.type, frozenset({"traces", "metrics"}))


# ---------------------------------------------------------------------- exporters
@dataclass(frozen=True)
class ExporterSettings:
    """An exporter's class and its section as the class takes it (file_storage resolved to a directory)."""

    cls: type[Exporter]
    config: Mapping[str, Any]


def _exporter_factory(cls: type[Exporter]) -> Callable[[str, dict[str, Any], dict[str, Any]], ExporterSettings]:
    def parse(component_id: str, section: dict[str, Any], context: dict[str, Any]) -> ExporterSettings:
        section = _resolve_storage(component_id, section, context.get("extensions", {}))
        cls(component_id, section)  # raises ConfigError for bad values; opens nothing until start()
        return ExporterSettings(cls, section)

    return parse


def _resolve_storage(component_id: str, section: dict[str, Any], extensions: Mapping[str, Any]) -> dict[str, Any]:
    """``sending_queue.storage: file_storage/x`` -> ``sending_queue.storage_directory: <dir>/<id>``."""
    queue = section.get("sending_queue")
    if not isinstance(queue, Mapping) or queue.get("storage") is None:
        return section
    name = queue["storage"]
    extension = extensions.get(name) if isinstance(name, str) else None
    if extension is None or extension.type != "file_storage":
        raise ConfigError("sending_queue.storage", f"{name!r} is not a file_storage extension under extensions")
    queue = {k: v for k, v in queue.items() if k != "storage"}
    queue["storage_directory"] = f"{extension.settings.directory.rstrip('/')}/{component_id.replace('/', '_')}"
    return {**section, "sending_queue": queue}


def exporter_factories(types: Mapping[str, type[Exporter]] | None = None
                       ) -> dict[str, Callable[[str, dict[str, Any], dict[str, Any]], ExporterSettings]]:
    """Parsers for the exporter types (``EXPORTER_TYPES`` unless a caller, a test, passes its own)."""
    if types is None:
        from carbonspan.collector.exporters import EXPORTER_TYPES as types
    return {kind: _exporter_factory(cls) for kind, cls in types.items()}


def exporter_signals(component: Any) -> frozenset[str]:
    return component.settings.cls.signals
