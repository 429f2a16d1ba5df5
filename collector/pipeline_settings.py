"""Settings of each component type the collector knows, parsed and checked from its config section.

One parser per type: it takes the section (env already substituted), rejects unknown keys and bad
values with ConfigError (key relative to the section), and returns a frozen settings object that
the service builds the running component from. Exporters are the exporters module's own: their
settings are checked by constructing them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from carbonspan.collector.config_values import (
    as_mapping,
    check_known_keys,
    parse_duration_ns,
    parse_endpoint,
    parse_positive,
)
from carbonspan.collector.errors import ConfigError
from carbonspan.collector.exporters.base import Exporter
from carbonspan.processors.attribution import POLICIES, POLICY_TOKENS
from carbonspan.processors.join import IDLE_POLICIES, IDLE_REPORT, JoinSettings
from carbonspan.processors.rollup import RollupSettings

MIB = 1024 * 1024
DEFAULT_GRPC_ENDPOINT = "127.0.0.1:4317"
DEFAULT_HTTP_ENDPOINT = "127.0.0.1:4318"
DEFAULT_HEALTH_ENDPOINT = "127.0.0.1:13133"


def _string(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(key, f"expected a non-empty string, got {value!r}")
    return value


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


def _health_check(component_id: str, section: dict[str, Any], context: dict[str, Any]) -> HealthCheckSettings:
    check_known_keys(section, {"endpoint", "path"})
    host, port = parse_endpoint("endpoint", section.get("endpoint") or DEFAULT_HEALTH_ENDPOINT)
    path = str(section.get("path") or "/")
    if not path.startswith("/"):
        raise ConfigError("path", f"must start with /, got {path!r}")
    return HealthCheckSettings(host, port, path)


def _bearer_token(component_id: str, section: dict[str, Any], context: dict[str, Any]) -> BearerTokenSettings:
    check_known_keys(section, {"token", "scheme"})
    return BearerTokenSettings(_string(section.get("token"), "token"), str(section.get("scheme") or "Bearer"))


def _file_storage(component_id: str, section: dict[str, Any], context: dict[str, Any]) -> FileStorageSettings:
    check_known_keys(section, {"directory"})
    return FileStorageSettings(_string(section.get("directory"), "directory"))


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


def _server(section: dict[str, Any], default_endpoint: str, size_keys: dict[str, int],
            extensions: Mapping[str, Any]) -> ServerSettings:
    check_known_keys(section, {"endpoint", "tls", "auth", *size_keys})
    host, port = parse_endpoint("endpoint", section.get("endpoint") or default_endpoint)
    max_bytes = 4 * MIB
    for key, unit in size_keys.items():
        if section.get(key) is not None:
            max_bytes = int(parse_positive(key, section[key]) * unit)
    tls = None
    if section.get("tls") is not None:
        tls_section = as_mapping(section["tls"], "tls")
        try:
            check_known_keys(tls_section, {"cert_file", "key_file"})
        except ConfigError as exc:
            raise exc.within("tls") from exc
        tls = TlsSettings(_string(tls_section.get("cert_file"), "tls.cert_file"),
                          _string(tls_section.get("key_file"), "tls.key_file"))
    token = None
    if section.get("auth") is not None:
        auth = as_mapping(section["auth"], "auth")
        try:
            check_known_keys(auth, {"authenticator"})
        except ConfigError as exc:
            raise exc.within("auth") from exc
        name = _string(auth.get("authenticator"), "auth.authenticator")
        extension = extensions.get(name)
        if extension is None or extension.type != "bearertokenauth":
            raise ConfigError("auth.authenticator", f"{name!r} is not a bearertokenauth extension under extensions")
        token = extension.settings
    return ServerSettings(host, port, max_bytes, tls, token)


def _otlp_receiver(component_id: str, section: dict[str, Any], context: dict[str, Any]) -> OtlpReceiverSettings:
    check_known_keys(section, {"protocols"})
    protocols = as_mapping(section.get("protocols"), "protocols")
    check_known_keys(protocols, {"grpc", "http"}, "protocols")
    if not protocols:
        raise ConfigError("protocols", "name at least one of grpc, http")
    extensions = context.get("extensions", {})
    servers: dict[str, ServerSettings | None] = {"grpc": None, "http": None}
    for name, default, sizes in (("grpc", DEFAULT_GRPC_ENDPOINT, {"max_recv_msg_size_mib": MIB}),
                                 ("http", DEFAULT_HTTP_ENDPOINT, {"max_request_body_size": 1,
                                                                  "max_recv_msg_size_mib": MIB})):
        if name in protocols:
            try:
                servers[name] = _server(as_mapping(protocols[name], name), default, sizes, extensions)
            except ConfigError as exc:
                raise exc.within(f"protocols.{name}") from exc
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


def _carbon(component_id: str, section: dict[str, Any], context: dict[str, Any]) -> CarbonSettings:
    from carbonspan.collector.intensity_config import facility_from_config, intensity_provider_from_config

    check_known_keys(section, {"policy", "deadline", "retention", "gap", "idle", "counterfactual_regions", "gpu_models",
                     "intensity", "facility"})
    policy = section.get("policy", POLICY_TOKENS)
    if policy not in POLICIES:
        raise ConfigError("policy", f"expected one of {', '.join(POLICIES)}, got {policy!r}")
    idle = section.get("idle", IDLE_REPORT)
    if idle not in IDLE_POLICIES:
        raise ConfigError("idle", f"expected one of {', '.join(IDLE_POLICIES)}, got {idle!r}")
    durations = {}
    for key, default in (("deadline", "10s"), ("retention", "15m"), ("gap", "2s")):
        durations[key] = parse_duration_ns(key, section.get(key, default))
        if key != "deadline" and durations[key] <= 0:
            raise ConfigError(key, "must be greater than 0")
    gpu_models = as_mapping(section.get("gpu_models"), "gpu_models")
    regions = []
    for i, entry in enumerate(section.get("counterfactual_regions") or []):
        provider, sep, region = str(entry).partition("/")
        if not sep or not provider or not region:
            raise ConfigError(f"counterfactual_regions[{i}]", f"expected provider/region, got {entry!r}")
        regions.append((provider, region))
    join = JoinSettings(policy=policy, deadline_ns=durations["deadline"], retention_ns=durations["retention"],
                        gap_ns=durations["gap"], gpu_models={str(k): str(v) for k, v in gpu_models.items()},
                        counterfactual_regions=tuple(regions), idle=idle)
    intensity = as_mapping(section.get("intensity"), "intensity")
    facility = as_mapping(section.get("facility"), "facility")
    try:
        intensity_provider_from_config(intensity)  # checked now; built again, fresh, by the service
        facility_from_config(facility)
    except ValueError as exc:
        raise _from_value_error(exc) from exc
    return CarbonSettings(join, intensity, facility)


def _rollup(component_id: str, section: dict[str, Any], context: dict[str, Any]) -> RollupSettings:
    check_known_keys(section, {"settle", "idle_timeout", "max_traces"})
    settle = parse_duration_ns("settle", section.get("settle", "5s"))
    idle = parse_duration_ns("idle_timeout", section.get("idle_timeout", "30s"))
    if idle < settle:
        raise ConfigError("idle_timeout", "must be at least settle")
    max_traces = int(parse_positive("max_traces", section.get("max_traces", 200_000), integer=True))
    return RollupSettings(settle_ns=settle, idle_timeout_ns=idle, max_traces=max_traces)


def _batch(component_id: str, section: dict[str, Any], context: dict[str, Any]) -> BatchSettings:
    check_known_keys(section, {"send_batch_size", "timeout"})
    size = int(parse_positive("send_batch_size", section.get("send_batch_size", 8192), integer=True))
    timeout = parse_duration_ns("timeout", section.get("timeout", "200ms"))
    return BatchSettings(size, timeout)


def _memory_limiter(component_id: str, section: dict[str, Any], context: dict[str, Any]) -> MemoryLimiterSettings:
    check_known_keys(section, {"limit_spans", "limit_mib", "retry_after"})
    spans = section.get("limit_spans")
    mib = section.get("limit_mib")
    if spans is None and mib is None:
        raise ConfigError("limit_spans", "set limit_spans, limit_mib or both")
    retry = parse_duration_ns("retry_after", section.get("retry_after", "5s"))
    return MemoryLimiterSettings(
        limit_spans=int(parse_positive("limit_spans", spans, integer=True)) if spans is not None else None,
        limit_bytes=int(parse_positive("limit_mib", mib) * MIB) if mib is not None else None,
        retry_after_s=max(1, round(retry / 10**9)),
    )


PROCESSORS: dict[str, Callable[[str, dict[str, Any], dict[str, Any]], Any]] = {
    "carbon": _carbon,
    "carbon_rollup": _rollup,
    "batch": _batch,
    "memory_limiter": _memory_limiter,
}
_PROCESSOR_SIGNALS = {"carbon_rollup": frozenset({"traces"})}


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
