"""add_span_attributes and DoubleAttributes append serialized attributes in one parse; the span they
leave must equal the one set_attributes (a message write per field) leaves, for every value type the
processors write."""

from __future__ import annotations

import math

from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from carbonspan.processors.otlp import (
    DoubleAttributes,
    add_span_attributes,
    attributes_to_dict,
    python_to_any_value,
    set_attributes,
)

VALUES = {
    "carbon.energy.joules": 12.5,
    "carbon.zero": 0.0,
    "carbon.negative": -0.0,
    "carbon.huge": 1e300,
    "carbon.quality": "measured",
    "carbon.request.route": "prefill@us-east-1>decode@europe-north1",
    "carbon.request.span_count": 5,
    "carbon.big": -(2**62),
    "carbon.flag": True,
    "carbon.off": False,
    "carbon.gpu.ids": ["GPU-0", "GPU-1"],
}


def _span() -> Span:
    span = Span(name="decode", trace_id=b"t" * 16, span_id=b"s" * 8, start_time_unix_nano=1, end_time_unix_nano=2)
    span.attributes.append(KeyValue(key="gen_ai.usage.output_tokens", value=python_to_any_value(128)))
    return span


def test_appended_attributes_equal_those_set_field_by_field():
    for _ in range(2):  # second round: from the caches
        expected, got = _span(), _span()
        set_attributes(expected.attributes, VALUES)
        add_span_attributes(got, VALUES)
        assert got == expected
        assert got.SerializeToString() == expected.SerializeToString()
    assert attributes_to_dict(got.attributes)["carbon.energy.joules"] == 12.5
    assert math.copysign(1.0, attributes_to_dict(got.attributes)["carbon.negative"]) == -1.0


def test_a_key_already_there_is_replaced_not_duplicated():
    span = _span()
    add_span_attributes(span, {"carbon.energy.joules": 1.0, "carbon.quality": "measured"})
    add_span_attributes(span, {"carbon.energy.joules": 2.0, "gen_ai.usage.output_tokens": 64})
    keys = [kv.key for kv in span.attributes]
    assert sorted(keys) == sorted(set(keys))
    assert attributes_to_dict(span.attributes) == {"gen_ai.usage.output_tokens": 64, "carbon.energy.joules": 2.0,
                                                   "carbon.quality": "measured"}


def test_packed_doubles_equal_the_attributes_set_field_by_field():
    doubles = {key: value for key, value in VALUES.items() if type(value) is float}
    doubles["carbon.nan"], doubles["carbon.inf"], doubles["x" * 200] = math.nan, -math.inf, 5e-324  # 2-byte key length
    encoder = DoubleAttributes(list(doubles))
    for values in (list(doubles.values()), [float(i) for i in range(len(doubles))]):
        expected, got = _span(), _span()
        set_attributes(expected.attributes, dict(zip(doubles, values, strict=True)))
        got.MergeFromString(encoder.encode(values))
        assert got.SerializeToString() == expected.SerializeToString()
