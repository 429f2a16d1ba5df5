"""OTLP/JSON: the protobuf JSON mapping with the OTLP spec's exceptions.

OTLP/JSON (opentelemetry-proto, docs/specification.md "JSON Protobuf Encoding") is protobuf's
canonical JSON with lowerCamelCase keys and integer enums, except that trace and span ids are
hex strings rather than base64. protobuf's json_format does the mapping; this module only swaps
the id encoding on the way in and out. Used by the HTTP/JSON receiver, the file exporter (one
request per line, as the Collector's file exporter writes) and ``carbonspan report``.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.message import Message

_ID_KEYS = frozenset({"traceId", "spanId", "parentSpanId"})
M = TypeVar("M", bound=Message)


def _swap_ids(node: Any, convert: Any) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _ID_KEYS and isinstance(value, str):
                node[key] = convert(value)
            else:
                _swap_ids(value, convert)
    elif isinstance(node, list):
        for item in node:
            _swap_ids(item, convert)


def _base64_to_hex(value: str) -> str:
    return base64.b64decode(value).hex()


def _hex_to_base64(value: str) -> str:
    try:
        raw = bytes.fromhex(value)
    except ValueError as exc:
        raise ValueError(f"trace/span id {value!r} is not hex") from exc
    return base64.b64encode(raw).decode("ascii")


def to_dict(message: Message) -> dict[str, Any]:
    data = json_format.MessageToDict(message, use_integers_for_enums=True)
    _swap_ids(data, _base64_to_hex)
    return data


def dumps(message: Message) -> str:
    """One line of OTLP/JSON (no newline inside), as the Collector's file exporter writes."""
    return json.dumps(to_dict(message), separators=(",", ":"))


def from_dict(data: dict[str, Any], message: M) -> M:
    """Fill ``message`` from OTLP/JSON data. Raises ValueError (with the reason) on bad input."""
    _swap_ids(data, _hex_to_base64)
    try:
        json_format.ParseDict(data, message, ignore_unknown_fields=True)
    except (json_format.ParseError, binascii.Error) as exc:
        raise ValueError(str(exc)) from exc
    return message


def loads(text: str | bytes, message: M) -> M:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError("OTLP/JSON must be an object")
    return from_dict(data, message)
