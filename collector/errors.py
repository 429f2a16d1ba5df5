"""Errors the collector reports to the person who runs it."""

from __future__ import annotations


class ConfigError(ValueError):
    """A config value that cannot be used: names the key (dotted path) and, once known, the file line.

    Components raise it with the key relative to their own section (``endpoint``); the config loader
    prefixes the section (``exporters.otlp/jaeger.endpoint``) and adds the file and line.
    """

    def __init__(self, key: str, message: str, *, source: str | None = None, line: int | None = None) -> None:
        self.key = key
        self.message = message
        self.source = source
        self.line = line
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ""
        if self.source is not None:
            where = f"{self.source}:{self.line}: " if self.line is not None else f"{self.source}: "
        return f"{where}{self.key}: {self.message}" if self.key else f"{where}{self.message}"

    def within(self, prefix: str) -> ConfigError:
        """The same error, its key placed under ``prefix``."""
        key = f"{prefix}.{self.key}" if self.key else prefix
        return ConfigError(key, self.message, source=self.source, line=self.line)
