"""Parsers for the value types the Collector's config schema uses (durations, endpoints, sizes),
shared by every component so that ``5s`` or ``127.0.0.1:4317`` mean the same thing everywhere.
Each raises ConfigError naming the key it was given."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from carbonspan.collector.errors import ConfigError

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_DURATION_NS = {"ns": 1, "us": 10**3, "µs": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}


def parse_duration_ns(key: str, value: Any) -> int:
    """A Go-style duration (``200ms``, ``1m30s``), as the Collector writes them; a bare number is seconds."""
    if isinstance(value, bool):
        raise ConfigError(key, f"expected a duration such as 5s or 200ms, got {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ConfigError(key, f"a duration cannot be negative, got {value!r}")
        return int(value * 10**9)
    text = str(value).strip()
    parts = _DURATION.findall(text)
    if not text or "".join(n + u for n, u in parts) != text:
        raise ConfigError(key, f"expected a duration such as 5s or 200ms, got {value!r}")
    return int(sum(float(number) * _DURATION_NS[unit] for number, unit in parts))


def parse_endpoint(key: str, value: Any) -> tuple[str, int]:
    """``host:port`` (``[::1]:4317`` for IPv6); port 0 asks the system for a free one."""
    text = str(value).strip()
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host or int(port) > 65535:
        raise ConfigError(key, f"expected host:port, got {value!r}")
    return host.strip("[]"), int(port)


def parse_positive(key: str, value: Any, *, integer: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0 or (integer and value != int(value)):
        kind = "a positive integer" if integer else "a positive number"
        raise ConfigError(key, f"expected {kind}, got {value!r}")
    return value


def as_mapping(value: Any, key: str) -> dict[str, Any]:
    """A config section: a YAML mapping, or nothing (an empty section, as the Collector allows)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(key, f"expected a mapping, got {type(value).__name__}")
    return dict(value)


def check_known_keys(section: Mapping[str, Any], allowed: set[str], key: str = "") -> None:
    """A typo in a key fails at start, naming it, as in the Collector. ``key``: the section's own path."""
    for name in section:
        if name not in allowed:
            error = ConfigError(str(name), f"unknown key; expected one of {', '.join(sorted(allowed)) or 'none'}")
            raise error.within(key) if key else error


class Section:
    """One mapping of the config read through typed getters, each of which remembers the key it
    read, so that ``check_unknown`` can name a key nobody read (``retry_on_faliure``) as the
    Collector does. Keys in errors are dotted paths relative to the component's section."""

    def __init__(self, data: Mapping[str, Any] | None, prefix: str = "", *, ignore: frozenset[str] = frozenset()):
        self._data = as_mapping(data, prefix)
        self._prefix = prefix
        self._read: set[str] = set(ignore)
        self._children: list[Section] = []

    def key(self, name: str) -> str:
        return f"{self._prefix}.{name}" if self._prefix else name

    def has(self, name: str) -> bool:
        """Whether the key is set; a key asked about is a known one."""
        self._read.add(name)
        return self._data.get(name) is not None

    def __contains__(self, name: str) -> bool:
        """Whether the key is there at all (``grpc:`` with nothing under it turns gRPC on)."""
        self._read.add(name)
        return name in self._data

    def raw(self, name: str, default: Any = None) -> Any:
        self._read.add(name)
        value = self._data.get(name)
        return default if value is None else value

    def section(self, name: str) -> Section:
        child = Section(self.raw(name), self.key(name))
        self._children.append(child)
        return child

    def mapping(self, name: str) -> dict[str, Any]:
        """A sub-section handed whole to a parser of its own (intensity, facility)."""
        return as_mapping(self.raw(name), self.key(name))

    def string(self, name: str, default: str | None = None) -> str | None:
        value = self.raw(name, default)
        if value is not None and not isinstance(value, str):
            raise ConfigError(self.key(name), f"expected a string, got {value!r}")
        return value

    def required_string(self, name: str) -> str:
        value = self.raw(name)
        if not isinstance(value, str) or not value:
            raise ConfigError(self.key(name), f"expected a non-empty string, got {value!r}")
        return value

    def choice(self, name: str, choices: tuple[str, ...], default: str) -> str:
        value = str(self.raw(name, default)).strip().lower()
        if value not in choices:
            raise ConfigError(self.key(name), f"expected one of {', '.join(choices)}, got {value!r}")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self.raw(name, default)
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        if not isinstance(value, bool):
            raise ConfigError(self.key(name), f"expected true or false, got {value!r}")
        return value

    def duration_ns(self, name: str, default: str, *, allow_zero: bool = True) -> int:
        value = parse_duration_ns(self.key(name), self.raw(name, default))
        if value == 0 and not allow_zero:
            raise ConfigError(self.key(name), "must be longer than 0")
        return value

    def seconds(self, name: str, default: str, *, allow_zero: bool = False) -> float:
        return self.duration_ns(name, default, allow_zero=allow_zero) / 1e9

    def positive(self, name: str, default: float | None = None) -> float | None:
        value = self.raw(name, default)
        return None if value is None else parse_positive(self.key(name), value)

    def positive_int(self, name: str, default: int | None) -> int | None:
        """None only where the key is absent and the default is None."""
        value = self.raw(name, default)
        return None if value is None else int(parse_positive(self.key(name), value, integer=True))

    def endpoint(self, name: str, default: str) -> tuple[str, int]:
        return parse_endpoint(self.key(name), self.raw(name, default))

    def string_map(self, name: str) -> dict[str, str]:
        return {str(k): str(v) for k, v in self.mapping(name).items()}

    def check_unknown(self) -> None:
        """Raise for the first key that no getter read (children checked too)."""
        check_known_keys(self._data, self._read, self._prefix)
        for child in self._children:
            child.check_unknown()
