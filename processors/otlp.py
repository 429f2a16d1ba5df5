"""Reading and writing attributes on OTLP protobuf messages.

The processors work on the official opentelemetry-proto messages as they come off the wire, so
that nothing is lost between receive and export; these helpers hide the ``AnyValue`` oneof.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

AttributeValue = str | bool | int | float | Sequence[str] | Sequence[int] | Sequence[float] | None


def any_value_to_python(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value_to_python(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value_to_python(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind)


#: the AnyValue fields read as they are (the others are arrays and key-value lists).
_SCALAR_KINDS = frozenset({"string_value", "bool_value", "int_value", "double_value", "bytes_value"})
#: the AnyValue field of each exact scalar type: one dict look-up instead of an isinstance chain.
_SCALAR_FIELDS = {bool: "bool_value", int: "int_value", float: "double_value", str: "string_value"}


def assign_any_value(target: AnyValue, value: AttributeValue) -> None:
    """Write a Python value into an AnyValue in place (no intermediate message to copy)."""
    field = _SCALAR_FIELDS.get(type(value))
    if field is not None:
        setattr(target, field, value)
    elif isinstance(value, bool):
        target.bool_value = value
    elif isinstance(value, int):
        target.int_value = value
    elif isinstance(value, float):
        target.double_value = value
    elif isinstance(value, str):
        target.string_value = value
    elif value is None:
        target.Clear()
    else:
        array = target.array_value
        del array.values[:]
        for item in value:
            assign_any_value(array.values.add(), item)


def python_to_any_value(value: AttributeValue) -> AnyValue:
    out = AnyValue()
    assign_any_value(out, value)
    return out


def attributes_to_dict(attributes: Iterable[KeyValue]) -> dict[str, Any]:
    return {kv.key: any_value_to_python(kv.value) for kv in attributes}


def pick_attributes(attributes: Iterable[KeyValue], keys: frozenset[str]) -> dict[str, Any]:
    """Only the attributes named in ``keys``: a span carries many more than a processor reads."""
    return {kv.key: any_value_to_python(kv.value) for kv in attributes if kv.key in keys}


def read_attributes(attributes: Iterable[KeyValue], keys: frozenset[str], outputs: frozenset[str],
                    output_prefixes: str | tuple[str, ...]) -> tuple[dict[str, Any], bool]:
    """The attributes named in ``keys``, and whether none of a processor's outputs (named in
    ``outputs`` or starting with one of ``output_prefixes``) is there, so that it may append them without
    looking for ones to replace: one pass, since each attribute read costs a message wrapper."""
    picked = {}
    absent = True
    for kv in attributes:
        key = kv.key
        if key in keys:
            value = kv.value
            kind = value.WhichOneof("value")
            picked[key] = getattr(value, kind) if kind in _SCALAR_KINDS else any_value_to_python(value)
        elif absent and (key in outputs or key.startswith(output_prefixes)):
            absent = False
    return picked, absent


def get_attribute(attributes: Iterable[KeyValue], key: str, default: Any = None) -> Any:
    for kv in attributes:
        if kv.key == key:
            return any_value_to_python(kv.value)
    return default


def set_attributes(attributes: Any, values: Mapping[str, AttributeValue]) -> None:
    """Set (replace or append) attributes on a repeated KeyValue field, keeping the others."""
    pending = dict(values)
    if not pending.keys().isdisjoint([kv.key for kv in attributes]):
        for kv in attributes:
            if kv.key in pending:
                kv.value.Clear()
                assign_any_value(kv.value, pending.pop(kv.key))
    add = attributes.add
    for key, value in pending.items():
        assign_any_value(add(key=key).value, value)


#: serialized ``Span.attributes`` entries by (key, type, value), and by key the frame of a double
#: attribute without its 8-byte value: framing comes from the protobuf library, never written here.
_ENCODED: dict[tuple, bytes] = {}
_DOUBLE_FRAMES: dict[str, bytes] = {}
_PACK_DOUBLE = struct.Struct("<d").pack
#: the values whose encoding is cached by value (the union built once: ``a | b`` in the call makes one each time).
_CACHEABLE = str | int | bool


def _double_frame(key: str) -> bytes:
    frame = _DOUBLE_FRAMES[key] = Span(attributes=[KeyValue(key=key, value=AnyValue(double_value=1.0))]
                                       ).SerializeToString()[:-8]
    return frame


def _encoded_attribute(key: str, value: AttributeValue) -> bytes:
    if type(value) is float:
        return (_DOUBLE_FRAMES.get(key) or _double_frame(key)) + _PACK_DOUBLE(value)
    cache_key = (key, type(value), value) if isinstance(value, _CACHEABLE) else None
    encoded = _ENCODED.get(cache_key) if cache_key else None
    if encoded is None:
        encoded = Span(attributes=[KeyValue(key=key, value=python_to_any_value(value))]).SerializeToString()
        if cache_key:
            if len(_ENCODED) > 4096:  # bounded: routes and zones vary, keys and qualities do not
                _ENCODED.clear()
            _ENCODED[cache_key] = encoded
    return encoded


class DoubleAttributes:
    """Serialized ``Span.attributes`` entries of fixed keys with double values, for the figures a
    processor writes on every span: one ``struct`` call packs the values between the frames (from
    the protobuf library, as in ``encode_span_attributes``), about a quarter of the cost of
    encoding them one by one."""

    def __init__(self, keys: Sequence[str]) -> None:
        self.keys = tuple(keys)
        frames = [_double_frame(key) for key in self.keys]
        self._struct = struct.Struct("<" + "".join(f"{len(frame)}sd" for frame in frames))
        self._args: list = [item for frame in frames for item in (frame, 0.0)]

    def encode(self, values: Sequence[float]) -> bytes:
        args = self._args[:]
        args[1::2] = values
        return self._struct.pack(*args)


def add_span_attributes(span: Span, values: Mapping[str, AttributeValue], absent: bool = False) -> None:
    """``set_attributes`` on a span's attributes, in one parse: the new attributes are appended as
    serialized entries (one protobuf call per span instead of three per attribute). Where the span
    already has one of the keys it falls back to ``set_attributes``, which replaces in place;
    ``absent``: the caller knows that none of the keys is there, so nothing is looked up."""
    if not absent and not values.keys().isdisjoint([kv.key for kv in span.attributes]):
        set_attributes(span.attributes, values)
        return
    span.MergeFromString(encode_span_attributes(values))


def encode_span_attributes(values: Mapping[str, AttributeValue]) -> bytes:
    """The attributes as serialized ``Span.attributes`` entries: merged into a span that has none
    of the keys, they append them."""
    return b"".join([_encoded_attribute(key, value) for key, value in values.items()])


def as_float(value: Any) -> float | None:
    """A numeric attribute as float; None where absent or not a number (strings like '12' count)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _spans_wire() -> type:
    """A message laid out on the wire as ``ScopeSpans`` with its spans as bytes: spans kept
    serialized go into a ScopeSpans in one parse, their framing written by the library."""
    file = descriptor_pb2.FileDescriptorProto(name="carbonspan/spans_wire.proto", package="carbonspan.wire",
                                              syntax="proto3")
    message = file.message_type.add(name="SpansWire")
    message.field.add(name="spans", number=ScopeSpans.DESCRIPTOR.fields_by_name["spans"].number,
                      type=descriptor_pb2.FieldDescriptorProto.TYPE_BYTES,
                      label=descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("carbonspan.wire.SpansWire"))


_SpansWire = _spans_wire()


class SpanGroups:
    """Serialized spans put into ResourceSpans/ScopeSpans again under the resource and scope they
    arrived with (one group per original message, in first-seen order). Kept as bytes until
    ``build``, which parses each scope's spans in one go: copying span messages one by one costs
    several times as much (a deep copy per attribute), and bytes keep no received request alive.
    Each span may carry a ``tag`` (the join's figures for the roll-up), handed back by ``build`` in
    the order the built messages list the spans, which is not the order they were added in."""

    def __init__(self) -> None:
        self._scopes: dict[tuple[int, int], tuple[ResourceSpans, ScopeSpans, list[bytes], list[Any]]] = {}

    def extend(self, items: Iterable[tuple[ResourceSpans, ScopeSpans, bytes]]) -> None:
        """Each (resource, scope, span), without a tag: a run of spans of one scope (as the spans
        held from one message mostly come) looks its group up once."""
        last_resource = last_scope = spans = tags = None
        for src_resource, src_scope, span in items:
            if src_scope is not last_scope or src_resource is not last_resource:
                spans, tags = self.scope(src_resource, src_scope)
                last_resource, last_scope = src_resource, src_scope
            spans.append(span)
            tags.append(None)

    def scope(self, src_resource: ResourceSpans, src_scope: ScopeSpans) -> tuple[list[bytes], list[Any]]:
        """The lists of a scope's spans and tags, to append to in step: a caller adding many spans
        of one scope in a row looks its group up once."""
        key = (id(src_resource), id(src_scope))
        entry = self._scopes.get(key)
        if entry is None:
            entry = self._scopes[key] = (src_resource, src_scope, [], [])
        return entry[2], entry[3]

    def build(self, tags: list[Any] | None = None) -> list[ResourceSpans]:
        """The messages; with ``tags``, the spans' tags appended to it in the messages' order."""
        out: list[ResourceSpans] = []
        by_resource: dict[int, tuple[ResourceSpans, list[list[Any]]]] = {}
        for src_resource, src_scope, spans, scope_tags in self._scopes.values():
            built = by_resource.get(id(src_resource))
            if built is None:
                built = by_resource[id(src_resource)] = (
                    ResourceSpans(resource=src_resource.resource, schema_url=src_resource.schema_url), [])
                out.append(built[0])
            ss = built[0].scope_spans.add(scope=src_scope.scope, schema_url=src_scope.schema_url)
            ss.MergeFromString(_SpansWire(spans=spans).SerializeToString())
            built[1].append(scope_tags)
        if tags is not None:
            for _, resource_tags in by_resource.values():
                for scope_tags in resource_tags:
                    tags += scope_tags
        return out


def take_out_spans(taken: Iterable[tuple[ResourceSpans, ScopeSpans, list[int]]]) -> None:
    """Delete spans from their messages by index, and the scopes they leave empty, so that the
    rest of each message goes on as it is (a resource left without scopes is the caller's to drop)."""
    emptied: dict[int, ResourceSpans] = {}
    for rs, ss, indexes in taken:
        spans, indexes = ss.spans, sorted(indexes)
        # from the end, one deletion per run of evenly spaced indexes (a slice with a step): each
        # deletion is a protobuf call, and the spans taken out often alternate with those left in
        end = len(indexes)
        while end:
            first = end - 1
            step = max(indexes[first] - indexes[first - 1], 1) if first else 1  # an index twice: one by one
            while first and indexes[first] - indexes[first - 1] == step:
                first -= 1
            del spans[indexes[first] : indexes[end - 1] + 1 : step]
            end = first
        if not ss.spans:
            emptied[id(rs)] = rs
    for rs in emptied.values():
        for i in reversed(range(len(rs.scope_spans))):
            if not rs.scope_spans[i].spans:
                del rs.scope_spans[i]
