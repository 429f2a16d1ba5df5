"""Reading an exporter's config section: typed getters that name the offending key, and a check for
keys nobody read, so a typo (``retry_on_faliure``) fails at start as it does in the Collector."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from carbonspan.collector.config_values import parse_duration_ns, parse_positive
from carbonspan.collector.errors import ConfigError


class Section:
    """One mapping of the config; keys in errors are dotted paths relative to the exporter's section."""

    def __init__(self, data: Mapping[str, Any] | None, prefix: str = "", *, ignore: frozenset[str] = frozenset()):
        if data is not None and not isinstance(data, Mapping):
            raise ConfigError(prefix, f"expected a mapping, got {data!r}")
        self._data = dict(data or {})
        self._prefix = prefix
        self._read: set[str] = set(ignore)
        self._children: list[Section] = []

    def key(self, name: str) -> str:
        return f"{self._prefix}.{name}" if self._prefix else name

    def has(self, name: str) -> bool:
        return self._data.get(name) is not None

    def raw(self, name: str, default: Any = None) -> Any:
        self._read.add(name)
        value = self._data.get(name)
        return default if value is None else value

    def section(self, name: str) -> Section:
        child = Section(self.raw(name), self.key(name))
        self._children.append(child)
        return child

    def string(self, name: str, default: str | None = None) -> str | None:
        value = self.raw(name, default)
        if value is not None and not isinstance(value, str):
            raise ConfigError(self.key(name), f"expected a string, got {value!r}")
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

    def seconds(self, name: str, default: str, *, allow_zero: bool = False) -> float:
        value = parse_duration_ns(self.key(name), self.raw(name, default)) / 1e9
        if value == 0 and not allow_zero:
            raise ConfigError(self.key(name), "must be longer than 0")
        return value

    def positive_int(self, name: str, default: int) -> int:
        return int(parse_positive(self.key(name), self.raw(name, default), integer=True))

    def string_map(self, name: str) -> dict[str, str]:
        value = self.raw(name, {})
        if not isinstance(value, Mapping):
            raise ConfigError(self.key(name), f"expected a mapping of names to values, got {value!r}")
        return {str(k): str(v) for k, v in value.items()}

    def check_unknown(self) -> None:
        """Raise for the first key that no getter read (children checked too)."""
        for name in self._data:
            if name not in self._read:
                raise ConfigError(self.key(name), "unknown key")
        for child in self._children:
            child.check_unknown()
