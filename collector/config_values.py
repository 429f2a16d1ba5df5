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
